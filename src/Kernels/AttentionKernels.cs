using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using GpuTransformer.Kernels.Backends;
using ILGPU;
using ILGPU.Runtime;

namespace GpuTransformer.Kernels;

/// <summary>Sizes of one attention call.</summary>
/// <param name="Batch">B, the number of sequences.</param>
/// <param name="Heads">H, the number of heads.</param>
/// <param name="QueryLength">Tq, query positions per sequence.</param>
/// <param name="KeyLength">Tk, key/value positions per sequence (≠ Tq in cross-attention and KV-cache decoding).</param>
/// <param name="HeadDim">d, the size of one head (1 … <see cref="AttentionKernels.MaxHeadDim"/>).</param>
public readonly record struct AttentionShape(int Batch, int Heads, int QueryLength, int KeyLength, int HeadDim)
{
    /// <inheritdoc/>
    public override string ToString() => $"[B {Batch}, H {Heads}, Tq {QueryLength}, Tk {KeyLength}, d {HeadDim}]";
}

/// <summary>
/// Where the heads of one attention operand live in a flat float view: element
/// (b, t, h, i) — batch, position, head, index inside the head — is at
/// <c>b·Batch + t·Row + h·Head + i</c>. The index inside a head is always contiguous.
/// </summary>
/// <param name="Batch">Elements between consecutive sequences.</param>
/// <param name="Row">Elements between consecutive positions.</param>
/// <param name="Head">Elements between consecutive heads.</param>
/// <remarks>
/// Dense [B, T, H, d] is <see cref="Dense"/>. The q, k, v thirds of a fused projection
/// [B, T, 3E] (E = H·d, columns q | k | v) are <c>qkv.SubView(0)</c>, <c>SubView(E)</c>,
/// <c>SubView(2E)</c>, each with <see cref="Fused"/>(T, H, d, 3) strides.
/// </remarks>
public readonly record struct AttentionStrides(long Batch, int Row, int Head)
{
    /// <summary>Dense [B, length, heads, headDim].</summary>
    public static AttentionStrides Dense(int length, int heads, int headDim) =>
        new((long)length * heads * headDim, heads * headDim, headDim);

    /// <summary>One of <paramref name="parts"/> operands interleaved per position, e.g. q, k or v inside a fused [B, length, 3·heads·headDim] projection.</summary>
    public static AttentionStrides Fused(int length, int heads, int headDim, int parts) =>
        new((long)length * parts * heads * headDim, parts * heads * headDim, headDim);

    /// <summary>Offset of element (b, t, h, 0).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal long Offset(int batch, int row, int head) => batch * Batch + (long)row * Row + (long)head * Head;

    /// <summary>One past the largest element index [B, length, heads, headDim] touches (strides are non-negative).</summary>
    internal long Extent(int batch, int length, int heads, int headDim) =>
        Offset(batch - 1, length - 1, heads - 1) + headDim;

    /// <inheritdoc/>
    public override string ToString() => $"(batch {Batch}, row {Row}, head {Head})";
}

/// <summary>
/// Options of an attention call. The default value is plain (non-causal, unpadded)
/// attention over dense [B, T, H, d] operands with scale 1/√d.
/// </summary>
public readonly record struct AttentionOptions
{
    /// <summary>Causal mask: key j is hidden from query i when j &gt; i + <see cref="CausalOffset"/>.</summary>
    public bool Causal { get; init; }

    /// <summary>
    /// Shift of the causal diagonal: 0 is PyTorch's <c>torch.triu(ones(Tq, Tk), 1)</c> mask;
    /// a KV-cache decoding step with Tq new queries after Tk − Tq cached positions passes Tk − Tq.
    /// </summary>
    public int CausalOffset { get; init; }

    /// <summary>Score scale; null means 1/√d.</summary>
    public float? Scale { get; init; }

    /// <summary>
    /// Optional key-padding mask [B, Tk] (ints): nonzero means that key is padding and no
    /// query attends to it (PyTorch's <c>key_padding_mask</c> True). An invalid (default)
    /// view means no padding.
    /// </summary>
    public ArrayView<int> KeyPaddingMask { get; init; }

    /// <summary>Strides of Q; null means dense [B, Tq, H, d].</summary>
    public AttentionStrides? Query { get; init; }

    /// <summary>Strides of K; null means dense [B, Tk, H, d].</summary>
    public AttentionStrides? Key { get; init; }

    /// <summary>Strides of V; null means dense [B, Tk, H, d].</summary>
    public AttentionStrides? Value { get; init; }

    /// <summary>Strides of O; null means dense [B, Tq, H, d].</summary>
    public AttentionStrides? Output { get; init; }

    /// <summary>Strides of dQ; null means the same as <see cref="Query"/> (so a dQKV buffer mirrors a fused qkv buffer).</summary>
    public AttentionStrides? QueryGradient { get; init; }

    /// <summary>Strides of dK; null means the same as <see cref="Key"/>.</summary>
    public AttentionStrides? KeyGradient { get; init; }

    /// <summary>Strides of dV; null means the same as <see cref="Value"/>.</summary>
    public AttentionStrides? ValueGradient { get; init; }

    /// <summary>Strides of dO; null means the same as <see cref="Output"/>.</summary>
    public AttentionStrides? OutputGradient { get; init; }

    /// <summary>The scale used for <paramref name="shape"/>: <see cref="Scale"/> or 1/√d.</summary>
    public float ScaleFor(AttentionShape shape) => Scale ?? 1f / MathF.Sqrt(shape.HeadDim);
}

/// <summary>
/// Fused scaled-dot-product attention, FlashAttention-2 style, forward and backward,
/// with no T×T matrix in global memory:
/// S = scale·Q·Kᵀ per (batch, head), masked (causal and/or key padding), P = softmax(S)
/// row-wise, O = P·V. Portable kernels (global and shared memory, barriers; no atomics,
/// collectives or shuffles), deterministic.
/// <para>
/// Decomposition: a group owns a block of rows (queries in <see cref="Forward"/>,
/// <see cref="Probabilities"/> and the dQ kernel; keys in the dK/dV kernel) with
/// T threads per row, each thread holding a 1/T slice of its row's accumulator (columns
/// g, g+T, …) and scoring 1/T of each streamed block. Streamed blocks of the other side
/// are staged in shared memory (transposed for the dot products, row-major for the
/// accumulation), so each thread's inner loops run over contiguous shared memory. The
/// forward keeps a running row maximum and sum (online softmax) and rescales its
/// accumulator; rows that are masked completely output zeros. Block shapes are the tile
/// type parameters chosen by <see cref="KernelTuning.Attention"/>; head sizes up to 64
/// and up to 128 are two instantiations chosen at launch.
/// </para>
/// <para>
/// The backward follows FlashAttention-2 without atomics: D = rowsum(dO∘O) in a small
/// kernel; one kernel per key block loops over the query blocks, recomputing P from Q, K
/// and the saved log-sum-exp, and writes dK and dV; a separate kernel per query block
/// writes dQ. Every output element is written by exactly one thread, summing in a fixed
/// order.
/// </para>
/// </summary>
public sealed class AttentionKernels : IKernelFamily<AttentionKernels>, IDisposable
{
    /// <summary>Largest supported head size d.</summary>
    public const int MaxHeadDim = 128;

    /// <summary>Head sizes up to this use the smaller instantiation (half the registers and shared memory).</summary>
    public const int NarrowHeadDim = 64;

    private readonly ComputeDevice device;
    private readonly Launchers narrow;
    private readonly Launchers wide;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, Geometry> rowDotKernel;
    private readonly MemoryBuffer1D<int, Stride1D.Dense> noPadding;

    private AttentionKernels(ComputeDevice device)
    {
        this.device = device;
        var (narrowSet, wideSet) = KernelSets(device.Tuning.Attention);
        var accelerator = device.Accelerator;
        narrow = new Launchers(accelerator, narrowSet);
        wide = new Launchers(accelerator, wideSet);
        rowDotKernel = accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, Geometry>(RowDotKernel);
        // Kernels always take a mask view; an unpadded call passes this one and a flag.
        noPadding = accelerator.Allocate1D<int>(1);
        noPadding.MemSetToZero(device.Stream);
    }

    /// <inheritdoc/>
    public static AttentionKernels Create(ComputeDevice device) => new(device);

    /// <inheritdoc/>
    public static IEnumerable<KernelEntry> EntryPoints(KernelTuning tuning)
    {
        ArgumentNullException.ThrowIfNull(tuning);
        var (narrowSet, wideSet) = KernelSets(tuning.Attention);
        return [.. narrowSet.Entries(), .. wideSet.Entries(), KernelEntry.Of(RowDotKernel)];
    }

    /// <summary>
    /// Forward pass: output = softmax(mask(scale·Q·Kᵀ))·V per batch and head, plus the
    /// row log-sum-exp the backward needs.
    /// </summary>
    /// <param name="output">O [B, Tq, H, d] with <see cref="AttentionOptions.Output"/> strides (written; other elements untouched).</param>
    /// <param name="logSumExp">[B, H, Tq]: log Σⱼ exp(sᵢⱼ) over the unmasked keys of the scaled scores; −∞ for a row whose keys are all masked.</param>
    /// <param name="q">Q [B, Tq, H, d] with <see cref="AttentionOptions.Query"/> strides.</param>
    /// <param name="k">K [B, Tk, H, d] with <see cref="AttentionOptions.Key"/> strides.</param>
    /// <param name="v">V [B, Tk, H, d] with <see cref="AttentionOptions.Value"/> strides.</param>
    /// <param name="shape">B, H, Tq, Tk, d.</param>
    /// <param name="options">Masks, scale and strides.</param>
    /// <remarks>
    /// A query row whose keys are all masked (fully padded sequence, or a causal offset
    /// that hides every key) outputs zeros and later gets zero gradients; PyTorch returns
    /// NaN there.
    /// </remarks>
    /// <exception cref="ArgumentException">A size is not positive, d &gt; <see cref="MaxHeadDim"/>, a view is too small for its strides, a stride is negative, the output's strides overlap, or an output overlaps an input.</exception>
    public void Forward(
        ArrayView<float> output,
        ArrayView<float> logSumExp,
        ArrayView<float> q,
        ArrayView<float> k,
        ArrayView<float> v,
        AttentionShape shape,
        in AttentionOptions options = default)
    {
        var geometry = Validate(shape, options);
        var rowStats = CheckRowStats(shape, logSumExp, nameof(logSumExp));
        var outputs = CheckOperand(output, geometry.Output, shape, shape.QueryLength, nameof(output), written: true);
        CheckDistinct(
            [outputs, rowStats],
            [
                CheckOperand(q, geometry.Query, shape, shape.QueryLength, nameof(q)),
                CheckOperand(k, geometry.Key, shape, shape.KeyLength, nameof(k)),
                CheckOperand(v, geometry.Value, shape, shape.KeyLength, nameof(v)),
            ]);
        CheckDistinct([outputs], [rowStats]);

        var launchers = For(shape);
        launchers.Forward(
            device.Stream, launchers.Config(shape.Batch, shape.Heads, shape.QueryLength),
            output, logSumExp, q, k, v, Padding(options), geometry);
    }

    /// <summary>
    /// Backward pass: dQ, dK, dV from dO, recomputing P from Q, K and the forward's
    /// log-sum-exp. Gradients are written, not accumulated (elements of the gradient views
    /// outside their strided heads are untouched, so dQ, dK and dV may interleave in one
    /// dQKV buffer; they must not share elements).
    /// </summary>
    /// <param name="dq">dQ [B, Tq, H, d] with <see cref="AttentionOptions.QueryGradient"/> strides (written).</param>
    /// <param name="dk">dK [B, Tk, H, d] with <see cref="AttentionOptions.KeyGradient"/> strides (written).</param>
    /// <param name="dv">dV [B, Tk, H, d] with <see cref="AttentionOptions.ValueGradient"/> strides (written).</param>
    /// <param name="rowDot">Scratch [B, H, Tq]: receives D = rowsum(dO∘O).</param>
    /// <param name="dOutput">dO [B, Tq, H, d] with <see cref="AttentionOptions.OutputGradient"/> strides.</param>
    /// <param name="output">O [B, Tq, H, d] of the forward, <see cref="AttentionOptions.Output"/> strides.</param>
    /// <param name="logSumExp">[B, H, Tq] of the forward.</param>
    /// <param name="q">Q as in the forward.</param>
    /// <param name="k">K as in the forward.</param>
    /// <param name="v">V as in the forward.</param>
    /// <param name="shape">B, H, Tq, Tk, d.</param>
    /// <param name="options">The forward's options.</param>
    /// <exception cref="ArgumentException">As <see cref="Forward"/>, and when a written view overlaps a read one or the scratch.</exception>
    public void Backward(
        ArrayView<float> dq,
        ArrayView<float> dk,
        ArrayView<float> dv,
        ArrayView<float> rowDot,
        ArrayView<float> dOutput,
        ArrayView<float> output,
        ArrayView<float> logSumExp,
        ArrayView<float> q,
        ArrayView<float> k,
        ArrayView<float> v,
        AttentionShape shape,
        in AttentionOptions options = default)
    {
        var geometry = Validate(shape, options);
        var scratch = CheckRowStats(shape, rowDot, nameof(rowDot));
        var dqPart = CheckOperand(dq, geometry.QueryGradient, shape, shape.QueryLength, nameof(dq), written: true);
        var dkPart = CheckOperand(dk, geometry.KeyGradient, shape, shape.KeyLength, nameof(dk), written: true);
        var dvPart = CheckOperand(dv, geometry.ValueGradient, shape, shape.KeyLength, nameof(dv), written: true);
        CheckDistinct(
            [dqPart, dkPart, dvPart, scratch],
            [
                CheckOperand(dOutput, geometry.OutputGradient, shape, shape.QueryLength, nameof(dOutput)),
                CheckOperand(output, geometry.Output, shape, shape.QueryLength, nameof(output)),
                CheckRowStats(shape, logSumExp, nameof(logSumExp)),
                CheckOperand(q, geometry.Query, shape, shape.QueryLength, nameof(q)),
                CheckOperand(k, geometry.Key, shape, shape.KeyLength, nameof(k)),
                CheckOperand(v, geometry.Value, shape, shape.KeyLength, nameof(v)),
            ]);
        CheckDistinct([scratch], [dqPart, dkPart, dvPart]);

        var launchers = For(shape);
        var padding = Padding(options);
        rowDotKernel(device.Stream, shape.Batch * shape.Heads * shape.QueryLength, rowDot, dOutput, output, geometry);
        launchers.KeyValueGradient(
            device.Stream, launchers.Config(shape.Batch, shape.Heads, shape.KeyLength),
            dk, dv, q, k, v, dOutput, logSumExp, rowDot, padding, geometry);
        launchers.QueryGradient(
            device.Stream, launchers.Config(shape.Batch, shape.Heads, shape.QueryLength),
            dq, q, k, v, dOutput, logSumExp, rowDot, padding, geometry);
    }

    /// <summary>
    /// The attention probabilities P = softmax(mask(scale·Q·Kᵀ)) [B, H, Tq, Tk], for
    /// inspection (attention maps). Computed from Q and K (two passes over the keys), not
    /// saved by <see cref="Forward"/>. Masked entries are 0; a row whose keys are all
    /// masked is all zeros.
    /// </summary>
    /// <param name="probabilities">[B, H, Tq, Tk], dense (written).</param>
    /// <param name="q">Q [B, Tq, H, d] with <see cref="AttentionOptions.Query"/> strides.</param>
    /// <param name="k">K [B, Tk, H, d] with <see cref="AttentionOptions.Key"/> strides.</param>
    /// <param name="shape">B, H, Tq, Tk, d.</param>
    /// <param name="options">Masks, scale and strides (V and O strides are ignored).</param>
    /// <exception cref="ArgumentException">As <see cref="Forward"/>.</exception>
    public void Probabilities(
        ArrayView<float> probabilities,
        ArrayView<float> q,
        ArrayView<float> k,
        AttentionShape shape,
        in AttentionOptions options = default)
    {
        var geometry = Validate(shape, options);
        var count = (long)shape.Batch * shape.Heads * shape.QueryLength * shape.KeyLength;
        if (probabilities.Length < count)
            Require.Holds(probabilities, count, nameof(probabilities), $"[B, H, Tq, Tk] = [{shape.Batch}, {shape.Heads}, {shape.QueryLength}, {shape.KeyLength}]");
        CheckDistinct(
            [new Operand(probabilities.SubView(0, count), nameof(probabilities))],
            [
                CheckOperand(q, geometry.Query, shape, shape.QueryLength, nameof(q)),
                CheckOperand(k, geometry.Key, shape, shape.KeyLength, nameof(k)),
            ]);

        var launchers = For(shape);
        launchers.Probabilities(
            device.Stream, launchers.Config(shape.Batch, shape.Heads, shape.QueryLength),
            probabilities, q, k, Padding(options), geometry);
    }

    /// <summary>Frees the family's one-element placeholder mask.</summary>
    public void Dispose() => noPadding.Dispose();

    // ---------------------------------------------------------------- validation

    private readonly record struct Operand(ArrayView<float> View, string Name);

    private Launchers For(AttentionShape shape) => shape.HeadDim <= NarrowHeadDim ? narrow : wide;

    private ArrayView<int> Padding(in AttentionOptions options) =>
        options.KeyPaddingMask.IsValid ? options.KeyPaddingMask : noPadding.View;

    /// <summary>Checks sizes, head size, scale, strides and the padding mask; returns the kernels' view of them.</summary>
    internal static Geometry Validate(AttentionShape shape, in AttentionOptions options)
    {
        Require.Positive(shape.Batch, "Batch");
        Require.Positive(shape.Heads, "Heads");
        Require.Positive(shape.QueryLength, "QueryLength");
        Require.Positive(shape.KeyLength, "KeyLength");
        Require.Positive(shape.HeadDim, "HeadDim");
        if (shape.HeadDim > MaxHeadDim)
        {
            throw new ArgumentException(
                $"HeadDim {shape.HeadDim} of attention shape {shape} exceeds the supported maximum {MaxHeadDim}.", nameof(shape));
        }
        if ((long)shape.Batch * shape.Heads * Math.Max(shape.QueryLength, shape.KeyLength) > int.MaxValue)
        {
            Require.Product($"attention rows [B, H, Tq] of {shape}", shape.Batch, shape.Heads, shape.QueryLength);
            Require.Product($"attention key rows [B, H, Tk] of {shape}", shape.Batch, shape.Heads, shape.KeyLength);
        }
        var scale = options.ScaleFor(shape);
        if (!float.IsFinite(scale))
            throw new ArgumentException($"Attention scale must be finite, got {scale}.", nameof(options));
        if (options.KeyPaddingMask.IsValid)
        {
            var needed = (long)shape.Batch * shape.KeyLength;
            if (options.KeyPaddingMask.Length < needed)
                Require.Holds(options.KeyPaddingMask, needed, "KeyPaddingMask", $"[B, Tk] = [{shape.Batch}, {shape.KeyLength}]");
        }
        return new Geometry(shape, options);
    }

    // The checks below build their messages only on failure: a launch allocates nothing.

    private static Operand CheckRowStats(AttentionShape shape, ArrayView<float> view, string name)
    {
        var count = shape.Batch * shape.Heads * shape.QueryLength;
        if (view.Length < count)
            Require.Holds(view, count, name, $"[B, H, Tq] = [{shape.Batch}, {shape.Heads}, {shape.QueryLength}]");
        return new Operand(view.SubView(0, count), name);
    }

    /// <summary>Checks a [B, length, H, d] operand's strides and size; returns the part of the view it touches.</summary>
    private static Operand CheckOperand(
        ArrayView<float> view, AttentionStrides strides, AttentionShape shape, int length, string name, bool written = false)
    {
        string Layout() => $"[B, T, H, d] = [{shape.Batch}, {length}, {shape.Heads}, {shape.HeadDim}] with strides {strides}";
        if (strides.Batch < 0 || strides.Row < 0 || strides.Head < 0)
            throw new ArgumentException($"{name} {Layout()} has a negative stride.", name);
        if (written && !Disjoint(strides, shape, length))
            throw new ArgumentException($"{name} {Layout()} maps different elements to the same memory; an output needs disjoint rows and heads.", name);
        var extent = strides.Extent(shape.Batch, length, shape.Heads, shape.HeadDim);
        if (view.Length < extent)
            Require.Holds(view, extent, name, Layout());
        return new Operand(view.SubView(0, extent), name);
    }

    /// <summary>Whether a strided [B, T, H, d] layout maps distinct (b, t, h, i) to distinct elements (sufficient test: each dimension, by increasing stride, steps over everything below it).</summary>
    private static bool Disjoint(AttentionStrides strides, AttentionShape shape, int length)
    {
        Span<(long Stride, int Size)> dims = [(strides.Batch, shape.Batch), (strides.Row, length), (strides.Head, shape.Heads)];
        dims.Sort(static (a, b) => a.Stride.CompareTo(b.Stride));
        long span = shape.HeadDim;
        foreach (var (stride, size) in dims)
        {
            if (size == 1)
                continue;
            if (stride < span)
                return false;
            span = stride * (size - 1) + span;
        }
        return true;
    }

    private static void CheckDistinct(ReadOnlySpan<Operand> written, ReadOnlySpan<Operand> read)
    {
        foreach (var w in written)
        {
            foreach (var r in read)
                Require.Distinct(w.View, w.Name, r.View, r.Name);
        }
    }

    // ---------------------------------------------------------------- kernel selection

    private static (KernelSet Narrow, KernelSet Wide) KernelSets(AttentionTile tile) => tile switch
    {
        AttentionTile.Q8K16T2 => (KernelSet.Of<Q8K16T2, Head64>(), KernelSet.Of<Q8K16T2, Head128>()),
        AttentionTile.Q64K32T1 => (KernelSet.Of<Q64K32T1, Head64>(), KernelSet.Of<Q64K32T1, Head128>()),
        AttentionTile.Q64K16T4 => (KernelSet.Of<Q64K16T4, Head64>(), KernelSet.Of<Q64K16T4, Head128>()),
        _ => throw new ArgumentOutOfRangeException(nameof(tile), tile, "Unknown attention tile."),
    };

    /// <summary>Threads per group of a tile.</summary>
    internal static int ThreadsPerGroup(AttentionTile tile)
    {
        var (set, _) = KernelSets(tile);
        return set.Rows * set.ThreadsPerRow;
    }

    /// <summary>Shared memory (bytes) the largest kernel (dK/dV) of a tile needs at a head-size bound.</summary>
    internal static int SharedMemoryBytes(AttentionTile tile, int headBound)
    {
        var (set, _) = KernelSets(tile);
        var streamed = set.Cols;
        var transposed = headBound * (streamed + 1);
        var rowMajor = streamed * headBound;
        var exchange = set.Rows * (streamed + set.ThreadsPerRow);
        return sizeof(float) * ((2 * transposed) + (2 * rowMajor) + (2 * exchange) + (2 * streamed));
    }

    /// <summary>The open kernel methods of one (tile, head bound) instantiation.</summary>
    private sealed record KernelSet(
        int Rows,
        int Cols,
        int ThreadsPerRow,
        Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, Geometry> Forward,
        Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, Geometry> KeyValueGradient,
        Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, Geometry> QueryGradient,
        Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, Geometry> Probabilities)
    {
        public static KernelSet Of<TTile, THead>()
            where TTile : struct, IAttentionTile
            where THead : struct, IHeadBound => new(
                default(TTile).Rows,
                default(TTile).Cols,
                default(TTile).ThreadsPerRow,
                ForwardKernel<TTile, THead>,
                KeyValueGradientKernel<TTile, THead>,
                QueryGradientKernel<TTile, THead>,
                ProbabilitiesKernel<TTile, THead>);

        public IEnumerable<KernelEntry> Entries() =>
        [
            KernelEntry.Of(Forward),
            KernelEntry.Of(KeyValueGradient),
            KernelEntry.Of(QueryGradient),
            KernelEntry.Of(Probabilities),
        ];
    }

    /// <summary>The compiled kernels of one instantiation.</summary>
    private sealed class Launchers(Accelerator accelerator, KernelSet set)
    {
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, Geometry> Forward { get; } =
            accelerator.LoadKernel(set.Forward);

        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, Geometry> KeyValueGradient { get; } =
            accelerator.LoadKernel(set.KeyValueGradient);

        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, Geometry> QueryGradient { get; } =
            accelerator.LoadKernel(set.QueryGradient);

        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, Geometry> Probabilities { get; } =
            accelerator.LoadKernel(set.Probabilities);

        /// <summary>One group per (batch, head, block of <c>Rows</c> owned rows), batch-major so neighbouring groups share K/V in cache.</summary>
        public KernelConfig Config(int batch, int heads, int ownedRows) =>
            new(batch * heads * ((ownedRows + set.Rows - 1) / set.Rows), set.Rows * set.ThreadsPerRow);
    }

    // ---------------------------------------------------------------- compile-time shapes

    /// <summary>Block shape of the attention kernels (see <see cref="AttentionTile"/>).</summary>
    internal interface IAttentionTile
    {
        /// <summary>Rows a group owns.</summary>
        int Rows { get; }

        /// <summary>Rows of the other side streamed through shared memory per step.</summary>
        int Cols { get; }

        /// <summary>Threads per owned row; divides <see cref="Cols"/> and 64.</summary>
        int ThreadsPerRow { get; }
    }

    /// <summary>Bound on the head size: sizes the accumulators and shared tiles.</summary>
    internal interface IHeadBound
    {
        int MaxHeadDim { get; }
    }

    internal readonly struct Q8K16T2 : IAttentionTile
    {
        public int Rows => 8;

        public int Cols => 16;

        public int ThreadsPerRow => 2;
    }

    internal readonly struct Q64K32T1 : IAttentionTile
    {
        public int Rows => 64;

        public int Cols => 32;

        public int ThreadsPerRow => 1;
    }

    internal readonly struct Q64K16T4 : IAttentionTile
    {
        public int Rows => 64;

        public int Cols => 16;

        public int ThreadsPerRow => 4;
    }

    internal readonly struct Head64 : IHeadBound
    {
        public int MaxHeadDim => 64;
    }

    internal readonly struct Head128 : IHeadBound
    {
        public int MaxHeadDim => 128;
    }

    /// <summary>Sizes, options and resolved strides, passed to every kernel.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal readonly struct Geometry
    {
        public readonly int Heads;
        public readonly int QueryLength;
        public readonly int KeyLength;
        public readonly int HeadDim;
        public readonly float Scale;
        public readonly int Causal;
        public readonly int CausalOffset;
        public readonly int HasPadding;
        public readonly AttentionStrides Query;
        public readonly AttentionStrides Key;
        public readonly AttentionStrides Value;
        public readonly AttentionStrides Output;
        public readonly AttentionStrides QueryGradient;
        public readonly AttentionStrides KeyGradient;
        public readonly AttentionStrides ValueGradient;
        public readonly AttentionStrides OutputGradient;

        public Geometry(AttentionShape shape, in AttentionOptions options)
        {
            Heads = shape.Heads;
            QueryLength = shape.QueryLength;
            KeyLength = shape.KeyLength;
            HeadDim = shape.HeadDim;
            Scale = options.ScaleFor(shape);
            Causal = options.Causal ? 1 : 0;
            CausalOffset = options.CausalOffset;
            HasPadding = options.KeyPaddingMask.IsValid ? 1 : 0;
            Query = options.Query ?? AttentionStrides.Dense(shape.QueryLength, shape.Heads, shape.HeadDim);
            Key = options.Key ?? AttentionStrides.Dense(shape.KeyLength, shape.Heads, shape.HeadDim);
            Value = options.Value ?? AttentionStrides.Dense(shape.KeyLength, shape.Heads, shape.HeadDim);
            Output = options.Output ?? AttentionStrides.Dense(shape.QueryLength, shape.Heads, shape.HeadDim);
            QueryGradient = options.QueryGradient ?? Query;
            KeyGradient = options.KeyGradient ?? Key;
            ValueGradient = options.ValueGradient ?? Value;
            OutputGradient = options.OutputGradient ?? Output;
        }

        /// <summary>Whether key <paramref name="key"/> is hidden from query <paramref name="query"/> (out-of-range positions count as masked).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public bool Masked(int query, int key, int batch, ArrayView<int> keyPadding) =>
            query >= QueryLength || key >= KeyLength
            || (Causal != 0 && key - query > CausalOffset)
            || (HasPadding != 0 && keyPadding[(batch * KeyLength) + key] != 0);

        /// <summary>End of the keys query rows [first, first+count) may see: a causal block stops at the diagonal.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public int KeyEnd(int firstQuery, int count)
        {
            if (Causal == 0)
                return KeyLength;
            var lastQuery = Math.Min(firstQuery + count, QueryLength) - 1;
            var end = (long)lastQuery + CausalOffset + 1;
            return (int)Math.Max(0L, Math.Min(end, KeyLength));
        }

        /// <summary>First query that may see key rows from <paramref name="firstKey"/> on.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public int QueryStart(int firstKey) =>
            Causal == 0 ? 0 : (int)Math.Max(0L, Math.Min((long)firstKey - CausalOffset, QueryLength));
    }

    /// <summary>Where a thread sits: its group's (batch, head, block) and its (row, slice) inside the block.</summary>
    private readonly struct Place
    {
        public readonly int Batch;
        public readonly int Head;
        public readonly int BatchHead;
        public readonly int FirstRow;
        public readonly int Row;
        public readonly int Slice;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Place(int rows, int split, int heads, int ownedLength)
        {
            var blocks = (ownedLength + rows - 1) / rows;
            BatchHead = Grid.IdxX / blocks;
            FirstRow = (Grid.IdxX - (BatchHead * blocks)) * rows;
            Batch = BatchHead / heads;
            Head = BatchHead - (Batch * heads);
            var local = Group.IdxX / split;
            Row = FirstRow + local;
            Slice = Group.IdxX - (local * split);
        }

        /// <summary>This thread's row inside the block.</summary>
        public int LocalRow => Row - FirstRow;
    }

    // ---------------------------------------------------------------- device helpers

    /// <summary>
    /// Cooperatively copies rows [first, first+count) × [0, dim) of one head into a shared
    /// tile (tile index row·rowStep + column·columnStep, so the same loop stages row-major
    /// and transposed tiles). Rows ≥ limit become zeros. Consecutive threads read
    /// consecutive columns (coalesced); indices advance without division.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Stage(
        ArrayView<float> tile, int rowStep, int columnStep,
        ArrayView<float> source, long headOffset, int sourceRowStride,
        int first, int count, int limit, int dim)
    {
        var threads = Group.DimX;
        var row = Group.IdxX / dim;
        var column = Group.IdxX - (row * dim);
        var rowAdvance = threads / dim;
        var columnAdvance = threads - (rowAdvance * dim);
        for (var e = Group.IdxX; e < count * dim; e += threads)
        {
            var position = first + row;
            tile[(row * rowStep) + (column * columnStep)] =
                position < limit ? source[headOffset + ((long)position * sourceRowStride) + column] : 0f;
            column += columnAdvance;
            row += rowAdvance;
            if (column >= dim)
            {
                column -= dim;
                row++;
            }
        }
    }

    /// <summary>
    /// dots[u] = x · tileᵀ[:, slice + u·split] for u &lt; cols/split: this thread's share of
    /// one row's dot products with a transposed shared block [dim][cols+1]. The row x is read
    /// from global memory once per column (it feeds cols/split multiply-adds).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Dots(
        ArrayView<float> dots, int share, bool valid, ArrayView<float> x, long rowOffset,
        ArrayView<float> transposed, int cols, int slice, int split, int dim)
    {
        for (var u = 0; u < share; u++)
            dots[u] = 0f;
        if (!valid)
            return;
        for (var c = 0; c < dim; c++)
        {
            var xc = x[rowOffset + c];
            var line = (c * (cols + 1)) + slice;
            for (var u = 0; u < share; u++)
                dots[u] += xc * transposed[line + (u * split)];
        }
    }

    /// <summary>
    /// Combines one value per thread over the <paramref name="split"/> threads of a row
    /// (max or sum, in slice order); every thread of the row gets the result. Contains a
    /// barrier when split &gt; 1. Two slots let consecutive calls run without a barrier
    /// between them.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float CombineRow(float value, bool max, ArrayView<float> exchange, int slot, int localRow, int slice, int split, int rows)
    {
        if (split == 1)
            return value;
        var baseIndex = (slot * rows * split) + (localRow * split);
        exchange[baseIndex + slice] = value;
        Group.Barrier();
        var result = exchange[baseIndex];
        for (var s = 1; s < split; s++)
            result = max ? MathF.Max(result, exchange[baseIndex + s]) : result + exchange[baseIndex + s];
        return result;
    }

    /// <summary>Number of the columns slice, slice+split, … below dim.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int OwnColumns(int dim, int slice, int split) => (dim - slice + split - 1) / split;

    // ---------------------------------------------------------------- kernels

    /// <summary>
    /// Forward. Group: one (batch, head, block of Rows queries). Per key block: stage Kᵀ and
    /// V, score this thread's keys, agree on the row maximum, write P, rescale and
    /// accumulate P·V for this thread's columns.
    /// </summary>
    private static void ForwardKernel<TTile, THead>(
        ArrayView<float> output,     // O [B, Tq, H, d] strided
        ArrayView<float> logSumExp,  // [B, H, Tq]
        ArrayView<float> q,          // [B, Tq, H, d] strided
        ArrayView<float> k,          // [B, Tk, H, d] strided
        ArrayView<float> v,          // [B, Tk, H, d] strided
        ArrayView<int> keyPadding,   // [B, Tk]
        Geometry a)
        where TTile : struct, IAttentionTile
        where THead : struct, IHeadBound
    {
        var rows = default(TTile).Rows;
        var cols = default(TTile).Cols;
        var split = default(TTile).ThreadsPerRow;
        var maxDim = default(THead).MaxHeadDim;
        var keysT = SharedMemory.Allocate<float>(maxDim * (cols + 1));   // Kᵀ block [dmax][Bc+1]
        var values = SharedMemory.Allocate<float>(cols * maxDim);        // V block [Bc][dmax]
        var probs = SharedMemory.Allocate<float>(rows * (cols + split)); // P block [Br][Bc+T]
        var exchange = SharedMemory.Allocate<float>(2 * rows * split);
        var scores = LocalMemory.Allocate<float>(cols / split);
        var acc = LocalMemory.Allocate<float>(maxDim / split);

        var place = new Place(rows, split, a.Heads, a.QueryLength);
        var dim = a.HeadDim;
        var share = cols / split;
        var own = OwnColumns(dim, place.Slice, split);
        var width = maxDim / split; // accumulator loops run to the bound (constant trip count: registers on GPUs, no remainder on CPUs)
        var valid = place.Row < a.QueryLength;
        var qOffset = valid ? a.Query.Offset(place.Batch, place.Row, place.Head) : 0L;
        var kOffset = a.Key.Offset(place.Batch, 0, place.Head);
        var vOffset = a.Value.Offset(place.Batch, 0, place.Head);
        var pRow = place.LocalRow * (cols + split);
        for (var u = 0; u < width; u++)
            acc[u] = 0f;
        var runningMax = float.NegativeInfinity;
        var runningSum = 0f; // over this thread's keys; summed over the row at the end

        var keyEnd = a.KeyEnd(place.FirstRow, rows);
        for (var first = 0; first < keyEnd; first += cols)
        {
            Stage(keysT, 1, cols + 1, k, kOffset, a.Key.Row, first, cols, a.KeyLength, dim);
            Stage(values, maxDim, 1, v, vOffset, a.Value.Row, first, cols, a.KeyLength, dim);
            Group.Barrier();

            Dots(scores, share, valid, q, qOffset, keysT, cols, place.Slice, split, dim);
            var blockMax = float.NegativeInfinity;
            for (var u = 0; u < share; u++)
            {
                var key = first + place.Slice + (u * split);
                var s = a.Masked(place.Row, key, place.Batch, keyPadding) ? float.NegativeInfinity : scores[u] * a.Scale;
                scores[u] = s;
                blockMax = MathF.Max(blockMax, s);
            }
            var newMax = MathF.Max(runningMax, CombineRow(blockMax, true, exchange, 0, place.LocalRow, place.Slice, split, rows));
            // A row that has seen only masked keys keeps max −∞; exp(−∞ − (−∞)) would be NaN.
            var rescale = newMax == float.NegativeInfinity ? 1f : MathF.Exp(runningMax - newMax);
            var sum = 0f;
            for (var u = 0; u < share; u++)
            {
                var p = scores[u] == float.NegativeInfinity ? 0f : MathF.Exp(scores[u] - newMax);
                probs[pRow + place.Slice + (u * split)] = p;
                sum += p;
            }
            runningSum = (runningSum * rescale) + sum;
            runningMax = newMax;
            if (split > 1)
                Group.Barrier();

            for (var u = 0; u < width; u++)
                acc[u] *= rescale;
            for (var j = 0; j < cols; j++)
            {
                var p = probs[pRow + j];
                var line = (j * maxDim) + place.Slice;
                for (var u = 0; u < width; u++)
                    acc[u] += p * values[line + (u * split)];
            }
            Group.Barrier();
        }

        var total = CombineRow(runningSum, false, exchange, 1, place.LocalRow, place.Slice, split, rows);
        if (!valid)
            return;
        var inverse = total > 0f ? 1f / total : 0f;
        var oOffset = a.Output.Offset(place.Batch, place.Row, place.Head) + place.Slice;
        for (var u = 0; u < own; u++)
            output[oOffset + (u * split)] = acc[u] * inverse;
        if (place.Slice == 0)
        {
            logSumExp[(place.BatchHead * a.QueryLength) + place.Row] =
                total > 0f ? runningMax + MathF.Log(total) : float.NegativeInfinity;
        }
    }

    /// <summary>D = rowsum(dO∘O) per (batch, head, query): one thread per row.</summary>
    private static void RowDotKernel(
        Index1D index,
        ArrayView<float> rowDot,   // [B, H, Tq]
        ArrayView<float> dOutput,  // [B, Tq, H, d] strided
        ArrayView<float> output,   // [B, Tq, H, d] strided
        Geometry a)
    {
        var batchHead = index / a.QueryLength;
        var row = index - (batchHead * a.QueryLength);
        var batch = batchHead / a.Heads;
        var head = batchHead - (batch * a.Heads);
        var dOffset = a.OutputGradient.Offset(batch, row, head);
        var oOffset = a.Output.Offset(batch, row, head);
        var sum = 0f;
        for (var c = 0; c < a.HeadDim; c++)
            sum += dOutput[dOffset + c] * output[oOffset + c];
        rowDot[index] = sum;
    }

    /// <summary>
    /// dK and dV. Group: one (batch, head, block of Rows keys); loops over the query blocks
    /// that can see them, recomputing Pᵀ from K, Q and the log-sum-exp:
    /// dV += Pᵀ·dO, dK += scale·dSᵀ·Q with dS = P∘(dO·Vᵀ − D).
    /// </summary>
    private static void KeyValueGradientKernel<TTile, THead>(
        ArrayView<float> dk,         // [B, Tk, H, d] strided
        ArrayView<float> dv,         // [B, Tk, H, d] strided
        ArrayView<float> q,          // [B, Tq, H, d] strided
        ArrayView<float> k,          // [B, Tk, H, d] strided
        ArrayView<float> v,          // [B, Tk, H, d] strided
        ArrayView<float> dOutput,    // [B, Tq, H, d] strided
        ArrayView<float> logSumExp,  // [B, H, Tq]
        ArrayView<float> rowDot,     // [B, H, Tq]
        ArrayView<int> keyPadding,   // [B, Tk]
        Geometry a)
        where TTile : struct, IAttentionTile
        where THead : struct, IHeadBound
    {
        var rows = default(TTile).Rows;
        var cols = default(TTile).Cols;
        var split = default(TTile).ThreadsPerRow;
        var maxDim = default(THead).MaxHeadDim;
        var queriesT = SharedMemory.Allocate<float>(maxDim * (cols + 1));   // Qᵀ block [dmax][Bq+1]
        var gradOutT = SharedMemory.Allocate<float>(maxDim * (cols + 1));   // dOᵀ block
        var queries = SharedMemory.Allocate<float>(cols * maxDim);          // Q block [Bq][dmax]
        var gradOut = SharedMemory.Allocate<float>(cols * maxDim);          // dO block
        var probs = SharedMemory.Allocate<float>(rows * (cols + split));    // Pᵀ block [Bk][Bq+T]
        var gradScores = SharedMemory.Allocate<float>(rows * (cols + split)); // dSᵀ block
        var lse = SharedMemory.Allocate<float>(cols);
        var delta = SharedMemory.Allocate<float>(cols);
        var scores = LocalMemory.Allocate<float>(cols / split);
        var gradProbs = LocalMemory.Allocate<float>(cols / split);
        var dkAcc = LocalMemory.Allocate<float>(maxDim / split);
        var dvAcc = LocalMemory.Allocate<float>(maxDim / split);

        var place = new Place(rows, split, a.Heads, a.KeyLength);
        var dim = a.HeadDim;
        var share = cols / split;
        var own = OwnColumns(dim, place.Slice, split);
        var width = maxDim / split; // accumulator loops run to the bound (constant trip count: registers on GPUs, no remainder on CPUs)
        var key = place.Row;
        var valid = key < a.KeyLength;
        var kOffset = valid ? a.Key.Offset(place.Batch, key, place.Head) : 0L;
        var vOffset = valid ? a.Value.Offset(place.Batch, key, place.Head) : 0L;
        var qOffset = a.Query.Offset(place.Batch, 0, place.Head);
        var dOffset = a.OutputGradient.Offset(place.Batch, 0, place.Head);
        var statOffset = place.BatchHead * a.QueryLength;
        var pRow = place.LocalRow * (cols + split);
        for (var u = 0; u < width; u++)
        {
            dkAcc[u] = 0f;
            dvAcc[u] = 0f;
        }

        for (var first = a.QueryStart(place.FirstRow); first < a.QueryLength; first += cols)
        {
            Stage(queriesT, 1, cols + 1, q, qOffset, a.Query.Row, first, cols, a.QueryLength, dim);
            Stage(gradOutT, 1, cols + 1, dOutput, dOffset, a.OutputGradient.Row, first, cols, a.QueryLength, dim);
            Stage(queries, maxDim, 1, q, qOffset, a.Query.Row, first, cols, a.QueryLength, dim);
            Stage(gradOut, maxDim, 1, dOutput, dOffset, a.OutputGradient.Row, first, cols, a.QueryLength, dim);
            for (var i = Group.IdxX; i < cols; i += Group.DimX)
            {
                var query = first + i;
                lse[i] = query < a.QueryLength ? logSumExp[statOffset + query] : 0f;
                delta[i] = query < a.QueryLength ? rowDot[statOffset + query] : 0f;
            }
            Group.Barrier();

            Dots(scores, share, valid, k, kOffset, queriesT, cols, place.Slice, split, dim);
            Dots(gradProbs, share, valid, v, vOffset, gradOutT, cols, place.Slice, split, dim);
            for (var u = 0; u < share; u++)
            {
                var i = place.Slice + (u * split);
                // Masked entries are zero explicitly: a fully masked row has log-sum-exp −∞.
                var p = a.Masked(first + i, key, place.Batch, keyPadding) ? 0f : MathF.Exp((scores[u] * a.Scale) - lse[i]);
                probs[pRow + i] = p;
                gradScores[pRow + i] = p * (gradProbs[u] - delta[i]);
            }
            if (split > 1)
                Group.Barrier();

            for (var i = 0; i < cols; i++)
            {
                var p = probs[pRow + i];
                var ds = gradScores[pRow + i];
                var line = (i * maxDim) + place.Slice;
                for (var u = 0; u < width; u++)
                {
                    dvAcc[u] += p * gradOut[line + (u * split)];
                    dkAcc[u] += ds * queries[line + (u * split)];
                }
            }
            Group.Barrier();
        }

        if (!valid)
            return;
        var dkOffset = a.KeyGradient.Offset(place.Batch, key, place.Head) + place.Slice;
        var dvOffset = a.ValueGradient.Offset(place.Batch, key, place.Head) + place.Slice;
        for (var u = 0; u < own; u++)
        {
            dk[dkOffset + (u * split)] = dkAcc[u] * a.Scale;
            dv[dvOffset + (u * split)] = dvAcc[u];
        }
    }

    /// <summary>
    /// dQ. Group: one (batch, head, block of Rows queries); loops over the visible key
    /// blocks: dQ = scale·dS·K with dS = P∘(dO·Vᵀ − D), P recomputed from Q, K and the
    /// log-sum-exp.
    /// </summary>
    private static void QueryGradientKernel<TTile, THead>(
        ArrayView<float> dq,         // [B, Tq, H, d] strided
        ArrayView<float> q,          // [B, Tq, H, d] strided
        ArrayView<float> k,          // [B, Tk, H, d] strided
        ArrayView<float> v,          // [B, Tk, H, d] strided
        ArrayView<float> dOutput,    // [B, Tq, H, d] strided
        ArrayView<float> logSumExp,  // [B, H, Tq]
        ArrayView<float> rowDot,     // [B, H, Tq]
        ArrayView<int> keyPadding,   // [B, Tk]
        Geometry a)
        where TTile : struct, IAttentionTile
        where THead : struct, IHeadBound
    {
        var rows = default(TTile).Rows;
        var cols = default(TTile).Cols;
        var split = default(TTile).ThreadsPerRow;
        var maxDim = default(THead).MaxHeadDim;
        var keysT = SharedMemory.Allocate<float>(maxDim * (cols + 1));         // Kᵀ block [dmax][Bc+1]
        var valuesT = SharedMemory.Allocate<float>(maxDim * (cols + 1));       // Vᵀ block
        var keys = SharedMemory.Allocate<float>(cols * maxDim);                // K block [Bc][dmax]
        var gradScores = SharedMemory.Allocate<float>(rows * (cols + split));  // dS block [Br][Bc+T]
        var scores = LocalMemory.Allocate<float>(cols / split);
        var gradProbs = LocalMemory.Allocate<float>(cols / split);
        var acc = LocalMemory.Allocate<float>(maxDim / split);

        var place = new Place(rows, split, a.Heads, a.QueryLength);
        var dim = a.HeadDim;
        var share = cols / split;
        var own = OwnColumns(dim, place.Slice, split);
        var width = maxDim / split; // accumulator loops run to the bound (constant trip count: registers on GPUs, no remainder on CPUs)
        var valid = place.Row < a.QueryLength;
        var qOffset = valid ? a.Query.Offset(place.Batch, place.Row, place.Head) : 0L;
        var dOffset = valid ? a.OutputGradient.Offset(place.Batch, place.Row, place.Head) : 0L;
        var stat = valid ? (place.BatchHead * a.QueryLength) + place.Row : 0;
        var rowLse = valid ? logSumExp[stat] : 0f;
        var rowDelta = valid ? rowDot[stat] : 0f;
        var kOffset = a.Key.Offset(place.Batch, 0, place.Head);
        var vOffset = a.Value.Offset(place.Batch, 0, place.Head);
        var pRow = place.LocalRow * (cols + split);
        for (var u = 0; u < width; u++)
            acc[u] = 0f;

        var keyEnd = a.KeyEnd(place.FirstRow, rows);
        for (var first = 0; first < keyEnd; first += cols)
        {
            Stage(keysT, 1, cols + 1, k, kOffset, a.Key.Row, first, cols, a.KeyLength, dim);
            Stage(valuesT, 1, cols + 1, v, vOffset, a.Value.Row, first, cols, a.KeyLength, dim);
            Stage(keys, maxDim, 1, k, kOffset, a.Key.Row, first, cols, a.KeyLength, dim);
            Group.Barrier();

            Dots(scores, share, valid, q, qOffset, keysT, cols, place.Slice, split, dim);
            Dots(gradProbs, share, valid, dOutput, dOffset, valuesT, cols, place.Slice, split, dim);
            for (var u = 0; u < share; u++)
            {
                var j = place.Slice + (u * split);
                var p = a.Masked(place.Row, first + j, place.Batch, keyPadding) ? 0f : MathF.Exp((scores[u] * a.Scale) - rowLse);
                gradScores[pRow + j] = p * (gradProbs[u] - rowDelta);
            }
            if (split > 1)
                Group.Barrier();

            for (var j = 0; j < cols; j++)
            {
                var ds = gradScores[pRow + j];
                var line = (j * maxDim) + place.Slice;
                for (var u = 0; u < width; u++)
                    acc[u] += ds * keys[line + (u * split)];
            }
            Group.Barrier();
        }

        if (!valid)
            return;
        var dqOffset = a.QueryGradient.Offset(place.Batch, place.Row, place.Head) + place.Slice;
        for (var u = 0; u < own; u++)
            dq[dqOffset + (u * split)] = acc[u] * a.Scale;
    }

    /// <summary>
    /// Probabilities. Group: one (batch, head, block of Rows queries). Pass 1 finds each
    /// row's log-sum-exp (per thread over its keys, combined at the end); pass 2 recomputes
    /// the scores and writes exp(s − lse), zeros where masked.
    /// </summary>
    private static void ProbabilitiesKernel<TTile, THead>(
        ArrayView<float> probabilities, // [B, H, Tq, Tk]
        ArrayView<float> q,             // [B, Tq, H, d] strided
        ArrayView<float> k,             // [B, Tk, H, d] strided
        ArrayView<int> keyPadding,      // [B, Tk]
        Geometry a)
        where TTile : struct, IAttentionTile
        where THead : struct, IHeadBound
    {
        var rows = default(TTile).Rows;
        var cols = default(TTile).Cols;
        var split = default(TTile).ThreadsPerRow;
        var maxDim = default(THead).MaxHeadDim;
        var keysT = SharedMemory.Allocate<float>(maxDim * (cols + 1));   // Kᵀ block [dmax][Bc+1]
        var exchange = SharedMemory.Allocate<float>(2 * rows * split);
        var scores = LocalMemory.Allocate<float>(cols / split);

        var place = new Place(rows, split, a.Heads, a.QueryLength);
        var dim = a.HeadDim;
        var share = cols / split;
        var valid = place.Row < a.QueryLength;
        var qOffset = valid ? a.Query.Offset(place.Batch, place.Row, place.Head) : 0L;
        var kOffset = a.Key.Offset(place.Batch, 0, place.Head);
        var keyEnd = a.KeyEnd(place.FirstRow, rows);

        var threadMax = float.NegativeInfinity;
        var threadSum = 0f;
        for (var first = 0; first < keyEnd; first += cols)
        {
            Stage(keysT, 1, cols + 1, k, kOffset, a.Key.Row, first, cols, a.KeyLength, dim);
            Group.Barrier();
            Dots(scores, share, valid, q, qOffset, keysT, cols, place.Slice, split, dim);
            var blockMax = float.NegativeInfinity;
            for (var u = 0; u < share; u++)
            {
                var masked = a.Masked(place.Row, first + place.Slice + (u * split), place.Batch, keyPadding);
                scores[u] = masked ? float.NegativeInfinity : scores[u] * a.Scale;
                blockMax = MathF.Max(blockMax, scores[u]);
            }
            var newMax = MathF.Max(threadMax, blockMax);
            if (newMax != float.NegativeInfinity)
            {
                var sum = 0f;
                for (var u = 0; u < share; u++)
                    sum += scores[u] == float.NegativeInfinity ? 0f : MathF.Exp(scores[u] - newMax);
                threadSum = (threadSum * MathF.Exp(threadMax - newMax)) + sum;
                threadMax = newMax;
            }
            Group.Barrier();
        }
        var rowMax = CombineRow(threadMax, true, exchange, 0, place.LocalRow, place.Slice, split, rows);
        var rescaled = threadMax == float.NegativeInfinity ? 0f : threadSum * MathF.Exp(threadMax - rowMax);
        var total = CombineRow(rescaled, false, exchange, 1, place.LocalRow, place.Slice, split, rows);
        var rowLse = total > 0f ? rowMax + MathF.Log(total) : 0f;

        var pOffset = ((long)place.BatchHead * a.QueryLength + place.Row) * a.KeyLength;
        for (var first = 0; first < a.KeyLength; first += cols)
        {
            // Blocks past the causal diagonal hold only zeros: no need to stage or score them.
            var visible = first < keyEnd;
            if (visible)
            {
                Stage(keysT, 1, cols + 1, k, kOffset, a.Key.Row, first, cols, a.KeyLength, dim);
                Group.Barrier();
                Dots(scores, share, valid, q, qOffset, keysT, cols, place.Slice, split, dim);
            }
            for (var u = 0; u < share; u++)
            {
                var key = first + place.Slice + (u * split);
                if (!valid || key >= a.KeyLength)
                    continue;
                probabilities[pOffset + key] = !visible || a.Masked(place.Row, key, place.Batch, keyPadding)
                    ? 0f
                    : MathF.Exp((scores[u] * a.Scale) - rowLse);
            }
            if (visible)
                Group.Barrier();
        }
    }
}
