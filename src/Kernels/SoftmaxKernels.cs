using System.Runtime.CompilerServices;
using GpuTransformer.Kernels.Backends;
using ILGPU;
using ILGPU.Runtime;
using RowRegister = GpuTransformer.Kernels.VectorPair<GpuTransformer.Kernels.VectorPair<GpuTransformer.Kernels.Float4>>;

namespace GpuTransformer.Kernels;

/// <summary>Options of <see cref="SoftmaxKernels"/>: input scale and causal mask.</summary>
public sealed record SoftmaxOptions
{
    /// <summary>No scale, no mask.</summary>
    public static SoftmaxOptions Default { get; } = new();

    /// <summary>Factor applied to the input before the softmax (1/√d for unfused attention scores). Must be finite.</summary>
    public float Scale { get; init; } = 1f;

    /// <summary>
    /// Causal mask: the rows are [..., <see cref="QueryLength"/>] queries over the columns as
    /// keys; row r is query i = r mod <see cref="QueryLength"/>, and column j is masked when
    /// j &gt; i + <see cref="CausalOffset"/>.
    /// </summary>
    public bool Causal { get; init; }

    /// <summary>Queries per sequence, Tq (needed when <see cref="Causal"/>; the row count must be a multiple of it).</summary>
    public int QueryLength { get; init; }

    /// <summary>
    /// Shift of the diagonal, as in the attention kernels: 0 is PyTorch's
    /// <c>triu(ones(Tq, Tk), 1)</c> mask; Tk − Tq lets the last query see every key (queries
    /// appended after a cache). Negative values mask whole rows: those rows come out as zeros.
    /// </summary>
    public int CausalOffset { get; init; }

    /// <summary>A causal mask for <paramref name="queryLength"/> queries per sequence.</summary>
    public static SoftmaxOptions CausalMask(int queryLength, int causalOffset = 0, float scale = 1f) =>
        new() { Causal = true, QueryLength = queryLength, CausalOffset = causalOffset, Scale = scale };
}

/// <summary>
/// Row-wise softmax over [R, C] and its backward, numerically stable (the row maximum is
/// subtracted), with an optional input scale and causal mask. Masked entries come out as 0;
/// a row with nothing left (fully masked, or all −∞) is all zeros.
/// <para>
/// One group of <see cref="KernelTuning.RowGroupSize"/> threads per row, threads striding
/// over the columns. The forward reads the row twice (a streaming max/sum pass, then the
/// write pass) and writes it once; the backward likewise reads y and dy twice and writes dx
/// once. Both reduce with <see cref="GroupReduce"/>, so results are deterministic.
/// </para>
/// <para>
/// GPUs (<see cref="RowTile.Vector256"/>) keep rows of up to 4096 floats in registers: the
/// forward reads x once and reduces (max, Σexp) in one tree, the backward reads y and dy once;
/// one read and one write per element, 128-bit where rows are aligned.
/// </para>
/// <para>
/// PoCL (<see cref="RowTile.CpuLanes"/>): one work-item per row walks it 8 columns at a time
/// (<see cref="Lanes8"/>): the max, then e = exp(scale·x − max) written out with Σe, then the
/// scaling by 1/Σe; the backward's dot product likewise. LLVM vectorises those loops.
/// </para>
/// </summary>
public sealed class SoftmaxKernels : IKernelFamily<SoftmaxKernels>
{
    private readonly ComputeDevice device;
    private readonly int groupSize;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, float, int, int> forward;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float, int, int> backward;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, float, int, int>[]? registerForward;   // scalar, vector access
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float, int, int>[]? registerBackward;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, float, int, int>[]? lanesForward;   // separate, same view
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float, int, int>[]? lanesBackward; // separate, dx = dy

    private SoftmaxKernels(ComputeDevice device)
    {
        this.device = device;
        groupSize = RowGroup.Size(device);
        var accelerator = device.Accelerator;
        forward = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, int, float, int, int>(ForwardKernel);
        backward = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float, int, int>(BackwardKernel);
        if (RowGroup.UsesRegisters(device))
        {
            registerForward = [accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, int, float, int, int>(RegisterForwardKernel<ScalarAccess>), accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, int, float, int, int>(RegisterForwardKernel<VectorAccess>)];
            registerBackward = [accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float, int, int>(RegisterBackwardKernel<ScalarAccess>), accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float, int, int>(RegisterBackwardKernel<VectorAccess>)];
        }
        if (device.Tuning.RowTile == RowTile.CpuLanes)
        {
            lanesForward =
            [
                accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, int, float, int, int>(LanesForwardKernel<SeparateViews>),
                accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, int, float, int, int>(LanesForwardKernel<SameView>),
            ];
            lanesBackward =
            [
                accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float, int, int>(LanesBackwardKernel<SeparateViews>),
                accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float, int, int>(LanesBackwardKernel<SameView>),
            ];
        }
    }

    /// <inheritdoc/>
    public static SoftmaxKernels Create(ComputeDevice device) => new(device);

    /// <inheritdoc/>
    public static IEnumerable<KernelEntry> EntryPoints(KernelTuning tuning)
    {
        ArgumentNullException.ThrowIfNull(tuning);
        List<KernelEntry> entries = [KernelEntry.Of(ForwardKernel), KernelEntry.Of(BackwardKernel)];
        if (tuning.RowTile == RowTile.Vector256)
        {
            entries.AddRange(
            [
                KernelEntry.Of(RegisterForwardKernel<ScalarAccess>), KernelEntry.Of(RegisterForwardKernel<VectorAccess>),
                KernelEntry.Of(RegisterBackwardKernel<ScalarAccess>), KernelEntry.Of(RegisterBackwardKernel<VectorAccess>),
            ]);
        }
        if (tuning.RowTile == RowTile.CpuLanes)
        {
            entries.AddRange(
            [
                KernelEntry.Of(LanesForwardKernel<SeparateViews>), KernelEntry.Of(LanesForwardKernel<SameView>),
                KernelEntry.Of(LanesBackwardKernel<SeparateViews>), KernelEntry.Of(LanesBackwardKernel<SameView>),
            ]);
        }
        return entries;
    }

    /// <summary>
    /// y = softmax(scale · x) over each row of [<paramref name="rows"/>, <paramref name="columns"/>],
    /// masked as <paramref name="options"/> says. <paramref name="output"/> may be <paramref name="input"/> (in place).
    /// </summary>
    /// <param name="output">y [R, C].</param>
    /// <param name="input">x [R, C].</param>
    /// <param name="rows">R (for attention: B·H·Tq).</param>
    /// <param name="columns">C (for attention: Tk).</param>
    /// <param name="options">Scale and mask; null: none.</param>
    /// <exception cref="ArgumentException">A size is not positive, a view is too short or partially overlaps, or the options do not fit the shape.</exception>
    public void Forward(ArrayView<float> output, ArrayView<float> input, int rows, int columns, SoftmaxOptions? options = null)
    {
        var mask = Check(options, rows, columns, out var scale);
        var shape = $"[{rows}, {columns}]";
        var count = rows * columns;
        Require.Holds(output, count, nameof(output), shape);
        Require.Holds(input, count, nameof(input), shape);
        Require.SameOrDisjoint(output, nameof(output), input, nameof(input));
        using var profile = device.Profile("Softmax", "forward", 0, 2.0 * sizeof(float) * count);
        if (registerForward is not null && columns <= RowRegisters.MaxColumns)
        {
            registerForward[RowRegisters.Aligned(columns, output, input) ? 1 : 0](
                device.Stream, RowGroup.PerRow(rows, RowRegisters.Threads), output, input, columns, scale, mask.QueryLength, mask.Offset);
            return;
        }
        if (lanesForward is not null)
        {
            lanesForward[Require.Overlap(output, input) ? 1 : 0](device.Stream, RowGroup.PerRow(rows, 1), output, input, columns, scale, mask.QueryLength, mask.Offset);
            return;
        }
        forward(device.Stream, RowGroup.PerRow(rows, groupSize), output, input, columns, scale, mask.QueryLength, mask.Offset);
    }

    /// <summary>
    /// dx = scale · y ∘ (dy − Σ_j dy_j·y_j) per row, 0 at masked entries: the gradient with
    /// respect to the <see cref="Forward"/> input for the same <paramref name="options"/>.
    /// <paramref name="dInput"/> may be <paramref name="dOutput"/> or <paramref name="output"/> (in place).
    /// </summary>
    /// <param name="dInput">dx [R, C].</param>
    /// <param name="output">y [R, C] from the forward.</param>
    /// <param name="dOutput">dy [R, C].</param>
    /// <param name="rows">R.</param>
    /// <param name="columns">C.</param>
    /// <param name="options">The forward's options; null: none.</param>
    /// <exception cref="ArgumentException">A size is not positive, a view is too short or partially overlaps, or the options do not fit the shape.</exception>
    public void Backward(ArrayView<float> dInput, ArrayView<float> output, ArrayView<float> dOutput, int rows, int columns, SoftmaxOptions? options = null)
    {
        var mask = Check(options, rows, columns, out var scale);
        var shape = $"[{rows}, {columns}]";
        var count = rows * columns;
        Require.Holds(dInput, count, nameof(dInput), shape);
        Require.Holds(output, count, nameof(output), shape);
        Require.Holds(dOutput, count, nameof(dOutput), shape);
        Require.SameOrDisjoint(dInput, nameof(dInput), output, nameof(output));
        Require.SameOrDisjoint(dInput, nameof(dInput), dOutput, nameof(dOutput));
        using var profile = device.Profile("Softmax", "backward", 0, 3.0 * sizeof(float) * count);
        if (registerBackward is not null && columns <= RowRegisters.MaxColumns)
        {
            registerBackward[RowRegisters.Aligned(columns, dInput, output, dOutput) ? 1 : 0](
                device.Stream, RowGroup.PerRow(rows, RowRegisters.Threads), dInput, output, dOutput, columns, scale, mask.QueryLength, mask.Offset);
            return;
        }
        if (lanesBackward is not null)
        {
            lanesBackward[Require.Overlap(dInput, dOutput) ? 1 : 0](device.Stream, RowGroup.PerRow(rows, 1), dInput, output, dOutput, columns, scale, mask.QueryLength, mask.Offset);
            return;
        }
        backward(device.Stream, RowGroup.PerRow(rows, groupSize), dInput, output, dOutput, columns, scale, mask.QueryLength, mask.Offset);
    }

    private static (int QueryLength, int Offset) Check(SoftmaxOptions? options, int rows, int columns, out float scale)
    {
        options ??= SoftmaxOptions.Default;
        Require.Positive(rows, nameof(rows));
        Require.Positive(columns, nameof(columns));
        Require.Product("softmax input [rows, columns]", rows, columns);
        if (!float.IsFinite(options.Scale))
            throw new ArgumentException($"Softmax scale must be finite, got {options.Scale}.", nameof(options));
        scale = options.Scale;
        if (!options.Causal)
            return (0, 0);
        if (options.QueryLength <= 0 || rows % options.QueryLength != 0)
        {
            throw new ArgumentException(
                $"A causal softmax over [{rows}, {columns}] needs QueryLength ≥ 1 dividing the rows ([..., Tq] queries), got {options.QueryLength}.",
                nameof(options));
        }
        return (options.QueryLength, options.CausalOffset);
    }

    // [R, C]: one group per row.
    private static void ForwardKernel(ArrayView<float> output, ArrayView<float> input, int columns, float scale, int queryLength, int causalOffset)
    {
        var scratch = SharedMemory.Allocate<float>(GroupReduce.MaxGroupSize);
        var row = Grid.IdxX;
        var start = row * columns;
        var limit = VisibleColumns(row, columns, queryLength, causalOffset);

        var max = float.NegativeInfinity;
        var sum = 0f;
        for (var c = Group.IdxX; c < limit; c += Group.DimX)
            RowGroup.Fold(scale * input[start + c], ref max, ref sum);
        var stats = RowGroup.Combine(max, sum, scratch);

        // Every read of the row happened before the barriers above: in place is safe.
        var live = stats.IsEmpty ? 0 : limit;
        var inverse = 1f / stats.Sum;
        for (var c = Group.IdxX; c < live; c += Group.DimX)
            output[start + c] = MathF.Exp(scale * input[start + c] - stats.Max) * inverse;
        for (var c = live + Group.IdxX; c < columns; c += Group.DimX)
            output[start + c] = 0f;
    }

    // [R, C]: one group per row.
    private static void BackwardKernel(ArrayView<float> dInput, ArrayView<float> output, ArrayView<float> dOutput, int columns, float scale, int queryLength, int causalOffset)
    {
        var scratch = SharedMemory.Allocate<float>(GroupReduce.MaxGroupSize);
        var row = Grid.IdxX;
        var start = row * columns;
        var limit = VisibleColumns(row, columns, queryLength, causalOffset);

        var dot = 0f;
        for (var c = Group.IdxX; c < limit; c += Group.DimX)
            dot += dOutput[start + c] * output[start + c];
        dot = GroupReduce.Sum(dot, scratch);

        for (var c = Group.IdxX; c < limit; c += Group.DimX)
            dInput[start + c] = scale * output[start + c] * (dOutput[start + c] - dot);
        for (var c = limit + Group.IdxX; c < columns; c += Group.DimX)
            dInput[start + c] = 0f;
    }

    // [R, C]: one work-item per row, 8 columns at a time (RowLanes.cs). In place (SameView) is
    // safe: each column is read before it is written, by the same work-item.
    private static void LanesForwardKernel<TPlacement>(ArrayView<float> output, ArrayView<float> input, int columns, float scale, int queryLength, int causalOffset)
        where TPlacement : struct, IRowPlacement
    {
        if (default(TPlacement).Aliased)
            input = output;
        var row = Grid.IdxX;
        var start = row * columns;
        var limit = VisibleColumns(row, columns, queryLength, causalOffset);
        var scale8 = Lanes8.Splat(scale);

        var max8 = Lanes8.Splat(float.NegativeInfinity);
        var lanes = limit - limit % 8;
        for (var c = 0; c < lanes; c += 8)
            max8 = Lanes8.Max(scale8 * Lanes8.Load(input, start + c), max8);
        var max = max8.Max8;
        for (var c = lanes; c < limit; c++)
        {
            var x = scale * input[start + c];
            max = x > max ? x : max;
        }

        // A row with no finite value (fully masked, or all −∞) is all zeros. The exps are a
        // plain loop (LLVM's loop vectoriser widens it); their sum runs 8 lanes at a time.
        var live = max == float.NegativeInfinity ? 0 : limit;
        for (var c = 0; c < live; c++)
            output[start + c] = LaneMath.Exp(scale * input[start + c] - max);
        var sum = Lanes8.SumOf(output, start, live);
        var inverse = 1f / sum;
        for (var c = 0; c < live; c++)
            output[start + c] *= inverse;
        for (var c = live; c < columns; c++)
            output[start + c] = 0f;
    }

    // [R, C]: one work-item per row, 8 columns at a time (RowLanes.cs); SameView: dx over dy.
    private static void LanesBackwardKernel<TPlacement>(ArrayView<float> dInput, ArrayView<float> output, ArrayView<float> dOutput, int columns, float scale, int queryLength, int causalOffset)
        where TPlacement : struct, IRowPlacement
    {
        if (default(TPlacement).Aliased)
            dOutput = dInput;
        var row = Grid.IdxX;
        var start = row * columns;
        var limit = VisibleColumns(row, columns, queryLength, causalOffset);
        var lanes = limit - limit % 8;

        var dot8 = Lanes8.Splat(0f);
        for (var c = 0; c < lanes; c += 8)
            dot8 += Lanes8.Load(dOutput, start + c) * Lanes8.Load(output, start + c);
        var dot = dot8.Sum;
        for (var c = lanes; c < limit; c++)
            dot += dOutput[start + c] * output[start + c];

        var scale8 = Lanes8.Splat(scale);
        var dotSplat = Lanes8.Splat(dot);
        for (var c = 0; c < lanes; c += 8)
            (scale8 * Lanes8.Load(output, start + c) * (Lanes8.Load(dOutput, start + c) - dotSplat)).Store(dInput, start + c);
        for (var c = lanes; c < limit; c++)
            dInput[start + c] = scale * output[start + c] * (dOutput[start + c] - dot);
        for (var c = limit; c < columns; c++)
            dInput[start + c] = 0f;
    }

    // [R, C ≤ 4096]: one 256-thread group per row, the row in registers (RowRegisters).
    private static void RegisterForwardKernel<TAccess>(ArrayView<float> output, ArrayView<float> input, int columns, float scale, int queryLength, int causalOffset)
        where TAccess : struct, IGlobalAccess
    {
        var scratch = SharedMemory.Allocate<float>(RowRegisters.Scratch);
        var row = Grid.IdxX;
        var start = row * columns;
        var limit = VisibleColumns(row, columns, queryLength, causalOffset);
        var x = RowRegisters.Load<RowRegister, TAccess>(input, start, columns);

        var fold = new Statistics(scale, limit);
        x.Visit(ref fold, 0, RowRegisters.FirstColumn, RowRegisters.Threads);
        var (max, sum) = GroupReduce.Pairs<MaxAndExpSum>(fold.Max, fold.Sum, scratch);

        // Every read of the row happened before the barriers above: in place is safe.
        var write = new Probabilities<TAccess>(output, start, columns, scale, max, 1f / sum, max == float.NegativeInfinity ? 0 : limit);
        x.Visit(ref write, 0, RowRegisters.FirstColumn, RowRegisters.Threads);
    }

    // [R, C ≤ 4096]: one 256-thread group per row, y and dy in registers.
    private static void RegisterBackwardKernel<TAccess>(ArrayView<float> dInput, ArrayView<float> output, ArrayView<float> dOutput, int columns, float scale, int queryLength, int causalOffset)
        where TAccess : struct, IGlobalAccess
    {
        var scratch = SharedMemory.Allocate<float>(RowRegisters.Scratch);
        var row = Grid.IdxX;
        var start = row * columns;
        var limit = VisibleColumns(row, columns, queryLength, causalOffset);
        var y = RowRegisters.Load<RowRegister, TAccess>(output, start, columns);
        var dy = RowRegisters.Load<RowRegister, TAccess>(dOutput, start, columns);

        var dot = new Dot(limit);
        y.Map(ref dot, dy, 0, RowRegisters.FirstColumn, RowRegisters.Threads);
        var (total, _) = GroupReduce.Pairs<TwoSums>(dot.Sum, 0f, scratch);

        var write = new Gradient<TAccess>(dInput, start, columns, scale, total, limit);
        y.Map(ref write, dy, 0, RowRegisters.FirstColumn, RowRegisters.Threads);
    }

    /// <summary>A thread's running (max, Σexp) of scale·x over its visible columns.</summary>
    private struct Statistics(float scale, int limit) : IFloat4Visitor
    {
        public float Max = float.NegativeInfinity;
        public float Sum;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Visit(int row, int column, Float4 value)
        {
            if (column < limit)
                RowGroup.Fold(scale * value.X, ref Max, ref Sum);
            if (column + 1 < limit)
                RowGroup.Fold(scale * value.Y, ref Max, ref Sum);
            if (column + 2 < limit)
                RowGroup.Fold(scale * value.Z, ref Max, ref Sum);
            if (column + 3 < limit)
                RowGroup.Fold(scale * value.W, ref Max, ref Sum);
        }
    }

    /// <summary>Writes exp(scale·x − max)·inverse below <paramref name="live"/>, zeros from there to the end of the row.</summary>
    private readonly struct Probabilities<TAccess>(ArrayView<float> output, int start, int columns, float scale, float max, float inverse, int live) : IFloat4Visitor
        where TAccess : struct, IGlobalAccess
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Visit(int row, int column, Float4 value) =>
            RowRegisters.Write<TAccess>(output, start, column, columns, new Float4(
                column < live ? MathF.Exp(scale * value.X - max) * inverse : 0f,
                column + 1 < live ? MathF.Exp(scale * value.Y - max) * inverse : 0f,
                column + 2 < live ? MathF.Exp(scale * value.Z - max) * inverse : 0f,
                column + 3 < live ? MathF.Exp(scale * value.W - max) * inverse : 0f));
    }

    /// <summary>A thread's Σ dy·y over its visible columns (y the row, dy the other).</summary>
    private struct Dot(int limit) : IFloat4Mapper
    {
        public float Sum;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Float4 Map(int row, int column, Float4 value, Float4 other)
        {
            if (column < limit)
                Sum += other.X * value.X;
            if (column + 1 < limit)
                Sum += other.Y * value.Y;
            if (column + 2 < limit)
                Sum += other.Z * value.Z;
            if (column + 3 < limit)
                Sum += other.W * value.W;
            return value;
        }
    }

    /// <summary>Writes dx = scale·y∘(dy − Σ dy·y) below <paramref name="limit"/>, zeros from there (y the row, dy the other).</summary>
    private readonly struct Gradient<TAccess>(ArrayView<float> dInput, int start, int columns, float scale, float dot, int limit) : IFloat4Mapper
        where TAccess : struct, IGlobalAccess
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Float4 Map(int row, int column, Float4 value, Float4 other)
        {
            RowRegisters.Write<TAccess>(dInput, start, column, columns, new Float4(
                column < limit ? scale * value.X * (other.X - dot) : 0f,
                column + 1 < limit ? scale * value.Y * (other.Y - dot) : 0f,
                column + 2 < limit ? scale * value.Z * (other.Z - dot) : 0f,
                column + 3 < limit ? scale * value.W * (other.W - dot) : 0f));
            return value;
        }
    }

    // Row r sees columns [0, result): query i = r mod Tq sees keys j ≤ i + offset; queryLength 0 means no mask.
    private static int VisibleColumns(int row, int columns, int queryLength, int causalOffset)
    {
        if (queryLength == 0)
            return columns;
        var query = row % queryLength;
        // Compared before adding, so that offsets near int.MaxValue cannot overflow.
        return causalOffset >= columns - 1 - query ? columns : Math.Max(0, query + causalOffset + 1);
    }
}
