using System.Runtime.CompilerServices;
using GpuTransformer.Kernels.Backends;
using ILGPU;

namespace GpuTransformer.Kernels;

// Register micro-tiles for the tiled matmul kernel. ILGPU 1.5.3 does not unroll loops (its
// LoopUnrolling pass is disabled), so a TM×TN accumulator written as a local array indexed
// in a loop would live in local (stack) memory on CUDA. Instead a micro-tile is a tree of
// structs whose leaves are single floats: every accessor is a call on a field, ILGPU inlines
// them all and LowerStructures turns each leaf into its own scalar, i.e. a register. The
// recursion is over types, so it unrolls at compile time and the sizes are constants of the
// instantiation (RegPair<RegPair<Reg1>> is a row of four registers).

/// <summary>A row of TN floats held in registers (accumulators, or one row of the B slice).</summary>
internal interface IRegisterRow<TSelf>
    where TSelf : struct, IRegisterRow<TSelf>
{
    /// <summary>Number of floats (a constant of the type).</summary>
    int Length { get; }

    /// <summary>this[j] = tile[offset + j·stride].</summary>
    void Load(ArrayView<float> tile, int offset, int stride);

    /// <summary>this[j] += a · b[j].</summary>
    void MultiplyAdd(float a, TSelf b);

    /// <summary>target[offset + j] = this[j].</summary>
    void Spill(ArrayView<float> target, int offset);
}

/// <summary>A TM×TN micro-tile: TM rows of <typeparamref name="TRow"/>.</summary>
internal interface IRegisterTile<TSelf, TRow>
    where TSelf : struct, IRegisterTile<TSelf, TRow>
    where TRow : struct, IRegisterRow<TRow>
{
    /// <summary>Number of rows (a constant of the type).</summary>
    int Rows { get; }

    /// <summary>row[i] += aTile[aOffset + i·aStride] · b.</summary>
    void MultiplyAdd(ArrayView<float> aTile, int aOffset, int aStride, TRow b);

    /// <summary>target[offset + i·TN + j] = element (i, j), row-major.</summary>
    void Spill(ArrayView<float> target, int offset);

    /// <summary>Element (i, j) = source[offset + i·TN + j]: what <see cref="Spill"/> wrote.</summary>
    void Restore(ArrayView<float> source, int offset);
}

/// <summary>One register.</summary>
internal struct Reg1 : IRegisterRow<Reg1>
{
    public float Value;

    public readonly int Length => 1;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Load(ArrayView<float> tile, int offset, int stride) => Value = tile[offset];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void MultiplyAdd(float a, Reg1 b) => Value = FusedMath.MultiplyAdd(a, b.Value, Value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Spill(ArrayView<float> target, int offset) => target[offset] = Value;
}

/// <summary>
/// One register, multiply and add rounded apart (two instructions on PoCL). PoCL's TN kernel
/// uses it: there LLVM paired the fma form with register copies (vfmadd213ps + vmovaps in perf
/// annotate), and the reference training step's weight-gradient products ran at 88–95 GFLOP/s
/// fused against 97–103 unfused (profiles at the same commit, alternating runs). Single TN
/// products now run as NN (MatmulKernels' PoCL remarks); batched ones still take this kernel.
/// </summary>
internal struct Reg1Unfused : IRegisterRow<Reg1Unfused>
{
    public float Value;

    public readonly int Length => 1;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Load(ArrayView<float> tile, int offset, int stride) => Value = tile[offset];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void MultiplyAdd(float a, Reg1Unfused b) => Value += a * b.Value;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Spill(ArrayView<float> target, int offset) => target[offset] = Value;
}

/// <summary>A row of two halves.</summary>
internal struct RegPair<THalf> : IRegisterRow<RegPair<THalf>>
    where THalf : struct, IRegisterRow<THalf>
{
    public THalf Low;
    public THalf High;

    public readonly int Length => 2 * default(THalf).Length;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Load(ArrayView<float> tile, int offset, int stride)
    {
        Low.Load(tile, offset, stride);
        High.Load(tile, offset + default(THalf).Length * stride, stride);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void MultiplyAdd(float a, RegPair<THalf> b)
    {
        Low.MultiplyAdd(a, b.Low);
        High.MultiplyAdd(a, b.High);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Spill(ArrayView<float> target, int offset)
    {
        Low.Spill(target, offset);
        High.Spill(target, offset + default(THalf).Length);
    }
}

/// <summary>A micro-tile of one row.</summary>
internal struct Rows1<TRow> : IRegisterTile<Rows1<TRow>, TRow>
    where TRow : struct, IRegisterRow<TRow>
{
    public TRow Row;

    public readonly int Rows => 1;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void MultiplyAdd(ArrayView<float> aTile, int aOffset, int aStride, TRow b) =>
        Row.MultiplyAdd(aTile[aOffset], b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Spill(ArrayView<float> target, int offset) => Row.Spill(target, offset);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Restore(ArrayView<float> source, int offset) => Row.Load(source, offset, 1);
}

/// <summary>A micro-tile of two halves of rows.</summary>
internal struct RowsPair<THalf, TRow> : IRegisterTile<RowsPair<THalf, TRow>, TRow>
    where THalf : struct, IRegisterTile<THalf, TRow>
    where TRow : struct, IRegisterRow<TRow>
{
    public THalf Low;
    public THalf High;

    public readonly int Rows => 2 * default(THalf).Rows;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void MultiplyAdd(ArrayView<float> aTile, int aOffset, int aStride, TRow b)
    {
        Low.MultiplyAdd(aTile, aOffset, aStride, b);
        High.MultiplyAdd(aTile, aOffset + default(THalf).Rows * aStride, aStride, b);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Spill(ArrayView<float> target, int offset)
    {
        Low.Spill(target, offset);
        High.Spill(target, offset + default(THalf).Rows * default(TRow).Length);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Restore(ArrayView<float> source, int offset)
    {
        Low.Restore(source, offset);
        High.Restore(source, offset + default(THalf).Rows * default(TRow).Length);
    }
}

/// <summary>
/// A run of depth steps of the tiled kernel, unrolled over types like the registers:
/// step s adds A(:, s)·B(s, :) into the micro-tile. PTX gets straight-line FMAs with constant
/// shared-memory offsets; on PoCL the kernel keeps a short loop around the run (see
/// <see cref="IMatmulShape.BlockDepth"/>).
/// </summary>
internal interface IDepthSteps
{
    /// <summary>Number of steps (a constant of the type).</summary>
    int Count { get; }

    /// <summary>
    /// For s in [0, Count): tile(i, j) += aTile[aOffset + s·aStep + i·aStride] · bTile[bOffset + s·bStep + j·bStride].
    /// </summary>
    void Run<TTile, TRow>(ref TTile tile, ArrayView<float> aTile, int aOffset, int aStep, int aStride, ArrayView<float> bTile, int bOffset, int bStep, int bStride)
        where TTile : struct, IRegisterTile<TTile, TRow>
        where TRow : struct, IRegisterRow<TRow>;

    /// <summary>For s in [0, Count): body.Step(first + s), unrolled (each s a constant after inlining).</summary>
    void Run<TBody>(ref TBody body, int first)
        where TBody : struct, IDepthStep;
}

/// <summary>One depth step of an unrolled product (see <see cref="IDepthSteps.Run{TBody}"/>).</summary>
internal interface IDepthStep
{
    /// <summary>Adds depth <paramref name="depth"/> of the staged slices into the registers.</summary>
    void Step(int depth);
}

/// <summary>One step.</summary>
internal struct Step1 : IDepthSteps
{
    public readonly int Count => 1;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Run<TTile, TRow>(ref TTile tile, ArrayView<float> aTile, int aOffset, int aStep, int aStride, ArrayView<float> bTile, int bOffset, int bStep, int bStride)
        where TTile : struct, IRegisterTile<TTile, TRow>
        where TRow : struct, IRegisterRow<TRow>
    {
        var b = default(TRow);
        b.Load(bTile, bOffset, bStride);
        tile.MultiplyAdd(aTile, aOffset, aStride, b);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Run<TBody>(ref TBody body, int first)
        where TBody : struct, IDepthStep => body.Step(first);
}

/// <summary>Two halves of a run of steps.</summary>
internal struct StepPair<THalf> : IDepthSteps
    where THalf : struct, IDepthSteps
{
    public readonly int Count => 2 * default(THalf).Count;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Run<TTile, TRow>(ref TTile tile, ArrayView<float> aTile, int aOffset, int aStep, int aStride, ArrayView<float> bTile, int bOffset, int bStep, int bStride)
        where TTile : struct, IRegisterTile<TTile, TRow>
        where TRow : struct, IRegisterRow<TRow>
    {
        var half = default(THalf);
        half.Run<TTile, TRow>(ref tile, aTile, aOffset, aStep, aStride, bTile, bOffset, bStep, bStride);
        half.Run<TTile, TRow>(ref tile, aTile, aOffset + half.Count * aStep, aStep, aStride, bTile, bOffset + half.Count * bStep, bStep, bStride);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Run<TBody>(ref TBody body, int first)
        where TBody : struct, IDepthStep
    {
        var half = default(THalf);
        half.Run(ref body, first);
        half.Run(ref body, first + half.Count);
    }
}
