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
/// GPUs run register-tiled kernels instead (<see cref="AttentionTile.RegisterTiled"/>): the
/// row-split kernels keep a row's accumulator in an array indexed at run time, which ILGPU
/// 1.5.3 (no loop unrolling) puts in local memory, and read one shared word per multiply-add.
/// The register-tiled ones split every product among all threads in 4-row register tiles
/// (VectorRegisters.cs) with 128-bit shared loads of row-major blocks: scores from 4×4 tiles of
/// Q·Kᵀ (8 loads per 64 multiply-adds), P·V, dS·K, Pᵀ·dO and dSᵀ·Q from tiles of 4 rows (8–12
/// multiply-adds per load). Decoding (few query rows over a long key cache) splits the keys
/// across groups (flash-decoding) and merges the partial results in split order.
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
    internal const int NarrowHeadDim = 64;

    /// <summary>Most floats of flash-decoding partials (64 MiB); a call that would need more splits its keys less.</summary>
    private const long MaxPartialFloats = 16L << 20;

    private readonly ComputeDevice device;
    private readonly Launchers narrow;
    private readonly Launchers wide;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, Geometry> rowDotKernel;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, Geometry> combineKernel;
    private readonly MemoryBuffer1D<int, Stride1D.Dense> noPadding;
    private readonly ScratchBuffer<float> partials;

    private AttentionKernels(ComputeDevice device)
    {
        this.device = device;
        partials = new ScratchBuffer<float>(device);
        var (narrowSet, wideSet) = KernelSets(device.Tuning.Attention);
        var accelerator = device.Accelerator;
        narrow = new Launchers(accelerator, narrowSet);
        wide = new Launchers(accelerator, wideSet);
        rowDotKernel = accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, Geometry>(RowDotKernel);
        combineKernel = accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, Geometry>(CombineKernel);
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
        return [.. narrowSet.Entries(), .. wideSet.Entries(), KernelEntry.Of(RowDotKernel), KernelEntry.Of(CombineKernel)];
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
        var forward = launchers.Set.ForwardLaunch;
        var splits = KeySplits(forward, shape, geometry);
        using var profile = device.Profile("Attention", "forward", 4 * ScoreProducts(shape, options));
        if (splits == 1)
        {
            launchers.Forward(
                device.Stream, forward.Config(shape.Batch, shape.Heads, shape.QueryLength),
                output, logSumExp, q, k, v, Padding(options), ((ArrayView<int>)noPadding.View).Cast<float>(), geometry);
            return;
        }

        // Flash-decoding: each of `splits` groups per query block scores a range of keys and
        // leaves (unnormalised O, max, sum); the combine kernel merges them in split order.
        var split = geometry.WithKeySplits(splits, KeyChunk(forward, shape.KeyLength, splits));
        var rows = (long)shape.Batch * shape.Heads * shape.QueryLength;
        var scratch = partials.View(splits * rows * (shape.HeadDim + 2));
        var config = forward.Config(shape.Batch, shape.Heads, shape.QueryLength);
        launchers.Forward(
            device.Stream, new KernelConfig(config.GridDim.X * splits, config.GroupDim.X),
            output, logSumExp, q, k, v, Padding(options), scratch, split);
        combineKernel(device.Stream, (int)(rows * shape.HeadDim), output, logSumExp, scratch, split);
    }

    /// <summary>
    /// Key splits of a forward launch (flash-decoding): 1 unless the tile supports them and the
    /// query blocks alone give fewer groups than <see cref="KernelTuning.AttentionMinimumGroups"/>
    /// (decoding: one query row per sequence and a long key cache); then enough to reach it,
    /// each split at least two key blocks.
    /// </summary>
    private int KeySplits(Launch forward, AttentionShape shape, in Geometry geometry)
    {
        var wanted = device.Tuning.AttentionMinimumGroups;
        var groups = (long)shape.Batch * shape.Heads * ((shape.QueryLength + forward.Rows - 1) / forward.Rows);
        if (!forward.SplitsKeys || groups >= wanted)
            return 1;
        var keyBlocks = (geometry.KeyEnd(0, shape.QueryLength) + forward.Columns - 1) / forward.Columns;
        var splits = (int)Math.Min((wanted + groups - 1) / groups, keyBlocks / 2);
        splits = (int)Math.Min(splits, MaxPartialFloats / ((long)shape.Batch * shape.Heads * shape.QueryLength * (shape.HeadDim + 2)));
        if (splits < 2)
            return 1;
        var chunk = KeyChunk(forward, shape.KeyLength, splits);
        return (shape.KeyLength + chunk - 1) / chunk;
    }

    /// <summary>Keys per split: Tk/splits rounded up to whole key blocks.</summary>
    private static int KeyChunk(Launch forward, int keyLength, int splits)
    {
        var blocks = (keyLength + forward.Columns - 1) / forward.Columns;
        return (blocks + splits - 1) / splits * forward.Columns;
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
        var products = ScoreProducts(shape, options);
        using (device.Profile("Attention", "backward rowsum(dO∘O)", 0, 2.0 * sizeof(float) * shape.Batch * shape.Heads * shape.QueryLength * shape.HeadDim))
            rowDotKernel(device.Stream, shape.Batch * shape.Heads * shape.QueryLength, rowDot, dOutput, output, geometry);
        using (device.Profile("Attention", "backward dK/dV", 8 * products))
        {
            launchers.KeyValueGradient(
                device.Stream, launchers.Set.KeyValueLaunch.Config(shape.Batch, shape.Heads, shape.KeyLength),
                dk, dv, q, k, v, dOutput, logSumExp, rowDot, padding, geometry);
        }
        using (device.Profile("Attention", "backward dQ", 6 * products))
        {
            launchers.QueryGradient(
                device.Stream, launchers.Set.QueryLaunch.Config(shape.Batch, shape.Heads, shape.QueryLength),
                dq, q, k, v, dOutput, logSumExp, rowDot, padding, geometry);
        }
    }

    /// <summary>Multiply-adds of one Q·Kᵀ (B·H·Tq·Tk·d, halved under a causal mask) for the profiler's GFLOP/s: the forward does 2 such products (S, P·V), the backward 7.</summary>
    private static double ScoreProducts(AttentionShape shape, in AttentionOptions options) =>
        (options.Causal ? 0.5 : 1.0) * shape.Batch * shape.Heads * shape.QueryLength * shape.KeyLength * shape.HeadDim;

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
        using var profile = device.Profile("Attention", "probabilities", 2 * ScoreProducts(shape, options));
        launchers.Probabilities(
            device.Stream, launchers.Set.ProbabilitiesLaunch.Config(shape.Batch, shape.Heads, shape.QueryLength),
            probabilities, q, k, Padding(options), geometry);
    }

    /// <summary>Frees the family's one-element placeholder mask and the flash-decoding partials.</summary>
    public void Dispose()
    {
        noPadding.Dispose();
        partials.Dispose();
    }

    // ---------------------------------------------------------------- validation

    internal readonly record struct Operand(ArrayView<float> View, string Name);

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
    internal static Operand CheckOperand(
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

    internal static void CheckDistinct(ReadOnlySpan<Operand> written, ReadOnlySpan<Operand> read)
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
        AttentionTile.RegisterTiled => (KernelSet.Registers<Blocks64>(), KernelSet.Registers<Blocks128>()),
        _ => throw new ArgumentOutOfRangeException(nameof(tile), tile, "Unknown attention tile."),
    };

    /// <summary>Threads per group of a tile (its largest kernel).</summary>
    internal static int ThreadsPerGroup(AttentionTile tile)
    {
        var (narrowSet, wideSet) = KernelSets(tile);
        return new[] { narrowSet, wideSet }
            .SelectMany(set => new[] { set.ForwardLaunch, set.KeyValueLaunch, set.QueryLaunch, set.ProbabilitiesLaunch })
            .Max(launch => launch.Threads);
    }

    /// <summary>How one kernel is launched: a group per (batch, head, block of <paramref name="Rows"/> owned rows) with <paramref name="Threads"/> threads.</summary>
    /// <param name="Rows">Rows a group owns.</param>
    /// <param name="Threads">Threads per group.</param>
    /// <param name="Columns">Rows of the other side per streamed block.</param>
    /// <param name="SplitsKeys">Whether the (forward) kernel takes key splits (flash-decoding).</param>
    private readonly record struct Launch(int Rows, int Threads, int Columns, bool SplitsKeys = false)
    {
        /// <summary>Batch-major, so neighbouring groups share K/V in cache.</summary>
        public KernelConfig Config(int batch, int heads, int ownedRows) =>
            new(batch * heads * ((ownedRows + Rows - 1) / Rows), Threads);
    }

    /// <summary>The open kernel methods of one (tile, head bound) instantiation and how each is launched.</summary>
    private sealed record KernelSet(
        Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, Geometry> Forward,
        Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, Geometry> KeyValueGradient,
        Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, Geometry> QueryGradient,
        Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, Geometry> Probabilities,
        Launch ForwardLaunch,
        Launch KeyValueLaunch,
        Launch QueryLaunch,
        Launch ProbabilitiesLaunch,
        KernelSpecialization Specialization)
    {
        /// <summary>The row-split kernels (one group owns rows, T threads per row).</summary>
        public static KernelSet Of<TTile, THead>()
            where TTile : struct, IAttentionTile
            where THead : struct, IHeadBound
        {
            var tile = default(TTile);
            var launch = new Launch(tile.Rows, tile.Rows * tile.ThreadsPerRow, tile.Cols);
            return new(
                ForwardKernel<TTile, THead>,
                KeyValueGradientKernel<TTile, THead>,
                QueryGradientKernel<TTile, THead>,
                ProbabilitiesKernel<TTile, THead>,
                launch, launch, launch, launch,
                KernelSpecialization.Empty);
        }

        /// <summary>The register-tiled kernels (GPUs); attention maps from the row-split kernel of 64 rows × 4 threads.</summary>
        public static KernelSet Registers<TBlocks>()
            where TBlocks : struct, IRegisterBlocks
        {
            var blocks = default(TBlocks);
            var threads = blocks.Threads;
            int Tiles(int rows, int cols) => rows / 4 * (cols / 4);
            // Every product is split among all threads in whole 4-row tiles (see IRegisterBlocks).
            if (threads % Tiles(blocks.ForwardQueries, blocks.ForwardKeys) != 0 ||
                threads % (2 * Tiles(blocks.GradientQueries, blocks.GradientKeys)) != 0 ||
                blocks.ForwardQueries / 4 * (blocks.MaxHeadDim / 8) != threads ||
                blocks.GradientQueries / 4 * (blocks.MaxHeadDim / 4) != threads ||
                blocks.GradientKeys / 4 * (blocks.MaxHeadDim / 4) != threads ||
                threads % blocks.ForwardQueries != 0)
            {
                throw new InvalidOperationException($"{typeof(TBlocks).Name}: the blocks do not split into 4-row register tiles over {threads} threads.");
            }
            var rowSplit = default(Q64K16T4);
            return new(
                RegisterForwardKernel<TBlocks>,
                RegisterKeyValueGradientKernel<TBlocks>,
                RegisterQueryGradientKernel<TBlocks>,
                ProbabilitiesKernel<Q64K16T4, TBlocks>,
                new Launch(blocks.ForwardQueries, threads, blocks.ForwardKeys, SplitsKeys: true),
                new Launch(blocks.GradientKeys, threads, blocks.GradientQueries),
                new Launch(blocks.GradientQueries, threads, blocks.GradientKeys),
                new Launch(rowSplit.Rows, rowSplit.Rows * rowSplit.ThreadsPerRow, rowSplit.Cols),
                new KernelSpecialization(threads, null));
        }

        public IEnumerable<KernelEntry> Entries() =>
        [
            KernelEntry.Of(Forward, Specialization),
            KernelEntry.Of(KeyValueGradient, Specialization),
            KernelEntry.Of(QueryGradient, Specialization),
            KernelEntry.Of(Probabilities),
        ];
    }

    /// <summary>The compiled kernels of one instantiation.</summary>
    private sealed class Launchers(Accelerator accelerator, KernelSet set)
    {
        public KernelSet Set { get; } = set;

        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, Geometry> Forward { get; } =
            accelerator.LoadKernel(set.Forward, set.Specialization);

        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, Geometry> KeyValueGradient { get; } =
            accelerator.LoadKernel(set.KeyValueGradient, set.Specialization);

        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, Geometry> QueryGradient { get; } =
            accelerator.LoadKernel(set.QueryGradient, set.Specialization);

        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, Geometry> Probabilities { get; } =
            accelerator.LoadKernel(set.Probabilities);
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

    /// <summary>
    /// Blocks of the register-tiled kernels (<see cref="AttentionTile.RegisterTiled"/>) at one
    /// head-size bound. Every product is split among all threads in 4-row register tiles: the
    /// scores (S = Q·Kᵀ, dP = dO·Vᵀ) in 4×4 tiles, each from 128-bit loads of both operands'
    /// rows (8 loads per 64 multiply-adds); where there are fewer score tiles than threads the
    /// head dimension is split too and the partial scores are summed, in split order, where
    /// they are read. Outputs are 4-row tiles of 8 columns (forward O) or 4 (dQ, dK, dV).
    /// Shared memory: forward Q [Br][d+4], K [Bc][d+4] (reused for P), V [Bc][d+4], S
    /// partials; gradients Q, dO, K, V and S, dP partials; all under 48 KB at d = 64 and 128.
    /// </summary>
    internal interface IRegisterBlocks : IHeadBound
    {
        /// <summary>Threads per group.</summary>
        int Threads { get; }

        /// <summary>Br of the forward: query rows a group owns.</summary>
        int ForwardQueries { get; }

        /// <summary>Bc of the forward: keys per streamed block.</summary>
        int ForwardKeys { get; }

        /// <summary>Query rows per block of the gradient kernels (owned by dQ, streamed by dK/dV).</summary>
        int GradientQueries { get; }

        /// <summary>Key rows per block of the gradient kernels (streamed by dQ, owned by dK/dV).</summary>
        int GradientKeys { get; }
    }

    /// <summary>d ≤ 64, 128 threads: forward 64 queries × 32 keys; gradients 32 × 32 (scores not split).</summary>
    internal readonly struct Blocks64 : IRegisterBlocks
    {
        public int MaxHeadDim => 64;

        public int Threads => 128;

        public int ForwardQueries => 64;

        public int ForwardKeys => 32;

        public int GradientQueries => 32;

        public int GradientKeys => 32;
    }

    /// <summary>d ≤ 128, 128 threads: forward 32 queries × 16 keys; gradients 16 × 16 (scores split 4 ways over d).</summary>
    internal readonly struct Blocks128 : IRegisterBlocks
    {
        public int MaxHeadDim => 128;

        public int Threads => 128;

        public int ForwardQueries => 32;

        public int ForwardKeys => 16;

        public int GradientQueries => 16;

        public int GradientKeys => 16;
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

        /// <summary>Groups per query block of a flash-decoding forward (1: none).</summary>
        public readonly int KeySplits;

        /// <summary>Keys per split (a multiple of the key block; Tk rounded up when there is one split).</summary>
        public readonly int KeyChunk;

        /// <summary>B·H.</summary>
        public readonly int BatchHeads;

        public Geometry(AttentionShape shape, in AttentionOptions options)
        {
            BatchHeads = shape.Batch * shape.Heads;
            KeySplits = 1;
            KeyChunk = shape.KeyLength;
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

        private Geometry(in Geometry other, int keySplits, int keyChunk)
        {
            this = other;
            KeySplits = keySplits;
            KeyChunk = keyChunk;
        }

        /// <summary>This geometry for a forward whose keys are split in <paramref name="keySplits"/> ranges of <paramref name="keyChunk"/>.</summary>
        public Geometry WithKeySplits(int keySplits, int keyChunk) => new(this, keySplits, keyChunk);

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
        int first, int count, int limit, int dim) =>
        Stage(tile, rowStep, columnStep, source, headOffset, sourceRowStride, first, count, limit, dim, dim);

    /// <summary>As above, <paramref name="width"/> ≥ dim columns per row, zeros from dim on (the register-tiled products read whole 4-column groups).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Stage(
        ArrayView<float> tile, int rowStep, int columnStep,
        ArrayView<float> source, long headOffset, int sourceRowStride,
        int first, int count, int limit, int dim, int width)
    {
        var threads = Group.DimX;
        var row = Group.IdxX / width;
        var column = Group.IdxX - (row * width);
        var rowAdvance = threads / width;
        var columnAdvance = threads - (rowAdvance * width);
        for (var e = Group.IdxX; e < count * width; e += threads)
        {
            var position = first + row;
            tile[(row * rowStep) + (column * columnStep)] =
                position < limit && column < dim ? source[headOffset + ((long)position * sourceRowStride) + column] : 0f;
            column += columnAdvance;
            row += rowAdvance;
            if (column >= width)
            {
                column -= width;
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
        ArrayView<float> partials,   // unused: these tiles take no key splits
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

    // ---------------------------------------------------------------- register-tiled kernels (GPUs)

    /// <summary>Where a group of a register-tiled kernel sits: (batch, head, block of owned rows) and, in a flash-decoding forward, its key split.</summary>
    private readonly struct BlockPlace
    {
        public readonly int Batch;
        public readonly int Head;
        public readonly int BatchHead;
        public readonly int FirstRow;
        public readonly int KeySplit;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public BlockPlace(int rows, int heads, int ownedLength, int keySplits)
        {
            var block = Grid.IdxX / keySplits;
            KeySplit = Grid.IdxX - block * keySplits;
            var blocks = (ownedLength + rows - 1) / rows;
            BatchHead = block / blocks;
            FirstRow = (block - BatchHead * blocks) * rows;
            Batch = BatchHead / heads;
            Head = BatchHead - Batch * heads;
        }
    }

    /// <summary>
    /// This thread's 4×4 tile of partial scores X·Yᵀ over its share of the head dimension:
    /// rows tileRow + i·xRows/4 of X and tileColumn + j·yRows/4 of Y (interleaved, so the
    /// 128-bit reads of neighbouring threads hit different banks), written to
    /// partial[row·scoreRow + column]. X [xRows][d+4] and Y [yRows][d+4] in shared memory as
    /// rows of Float4; 8 loads per 64 multiply-adds.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScoreTile(
        ArrayView<Float4> x, ArrayView<Float4> y, ArrayView<float> partial,
        int xRows, int yRows, int row4, int scoreRow, int tile, int split, int splits, int depthQuads)
    {
        var across = yRows / 4;
        var tileRow = tile / across;
        var tileColumn = tile - tileRow * across;
        var perSplit = (depthQuads + splits - 1) / splits;
        var begin = split * perSplit;
        var end = Math.Min(depthQuads, begin + perSplit);
        var xAt = tileRow * row4;
        var yAt = tileColumn * row4;
        var xStep = xRows / 4 * row4;
        var yStep = across * row4;
        var scores = default(Scores4x4);
        for (var quad = begin; quad < end; quad++)
        {
            scores.Dots(
                x[xAt + quad], x[xAt + xStep + quad], x[xAt + 2 * xStep + quad], x[xAt + 3 * xStep + quad],
                y[yAt + quad], y[yAt + yStep + quad], y[yAt + 2 * yStep + quad], y[yAt + 3 * yStep + quad]);
        }
        var at = tileRow * scoreRow + tileColumn;
        var rowStep = xRows / 4 * scoreRow;
        StoreScores(partial, at, across, scores.R0);
        StoreScores(partial, at + rowStep, across, scores.R1);
        StoreScores(partial, at + 2 * rowStep, across, scores.R2);
        StoreScores(partial, at + 3 * rowStep, across, scores.R3);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreScores(ArrayView<float> partial, int at, int columnStep, Float4 row)
    {
        partial[at] = row.X;
        partial[at + columnStep] = row.Y;
        partial[at + 2 * columnStep] = row.Z;
        partial[at + 3 * columnStep] = row.W;
    }

    /// <summary>Σ over the <paramref name="splits"/> head-dimension splits of the scores at Float4 index <paramref name="at"/>, in split order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Float4 SumSplits(ArrayView<Float4> partials, int at, int splitStride, int splits)
    {
        var sum = partials[at];
        for (var split = 1; split < splits; split++)
        {
            var next = partials[at + split * splitStride];
            sum = new Float4(sum.X + next.X, sum.Y + next.Y, sum.Z + next.Z, sum.W + next.W);
        }
        return sum;
    }

    /// <summary>Scaled scores of keys key0 … key0+3 for <paramref name="query"/>, −∞ where masked.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Float4 MaskedScores(Float4 scores, in Geometry a, int query, int key0, int batch, ArrayView<int> keyPadding) => new(
        a.Masked(query, key0, batch, keyPadding) ? float.NegativeInfinity : scores.X * a.Scale,
        a.Masked(query, key0 + 1, batch, keyPadding) ? float.NegativeInfinity : scores.Y * a.Scale,
        a.Masked(query, key0 + 2, batch, keyPadding) ? float.NegativeInfinity : scores.Z * a.Scale,
        a.Masked(query, key0 + 3, batch, keyPadding) ? float.NegativeInfinity : scores.W * a.Scale);

    /// <summary>exp(s − max) per element, 0 for −∞ (masked) scores.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Float4 Exponentials(Float4 scores, float max) => new(
        scores.X == float.NegativeInfinity ? 0f : MathF.Exp(scores.X - max),
        scores.Y == float.NegativeInfinity ? 0f : MathF.Exp(scores.Y - max),
        scores.Z == float.NegativeInfinity ? 0f : MathF.Exp(scores.Z - max),
        scores.W == float.NegativeInfinity ? 0f : MathF.Exp(scores.W - max));

    /// <summary>
    /// Forward for GPUs. Group: one (batch, head, block of Br queries), of one key range when
    /// flash-decoding. Q is staged once; per key block: stage K and V; scores S = Q·Kᵀ in 4×4
    /// register tiles; a row pass (Threads/Br threads per row, each reading the whole row for
    /// the block maximum) writes P = exp(S − max) into the K buffer and keeps the running max
    /// and this thread's share of the row sum; every thread rescales its 4×8 tile of O and
    /// adds P·V (128-bit loads: 4 of P and 8 of V per 128 multiply-adds).
    /// </summary>
    private static void RegisterForwardKernel<TBlocks>(
        ArrayView<float> output,     // O [B, Tq, H, d] strided
        ArrayView<float> logSumExp,  // [B, H, Tq]
        ArrayView<float> q,          // [B, Tq, H, d] strided
        ArrayView<float> k,          // [B, Tk, H, d] strided
        ArrayView<float> v,          // [B, Tk, H, d] strided
        ArrayView<int> keyPadding,   // [B, Tk]
        ArrayView<float> partials,   // flash-decoding: [splits, B·H·Tq, d + 2] (O unnormalised, max, sum)
        Geometry a)
        where TBlocks : struct, IRegisterBlocks
    {
        var blocks = default(TBlocks);
        var maxDim = blocks.MaxHeadDim;
        var threads = blocks.Threads;
        var rows = blocks.ForwardQueries;
        var cols = blocks.ForwardKeys;
        var row4 = (maxDim + 4) / 4;                       // Float4s per staged row
        var scoreRow = cols + 4;                           // floats per score (and P) row
        var tiles = rows / 4 * (cols / 4);
        var splits = threads / tiles;
        var perRow = threads / rows;
        var outGroups = maxDim / 8;
        var kBuffer = cols * row4 > rows * scoreRow / 4 ? cols * row4 : rows * scoreRow / 4;
        var queries = SharedMemory.Allocate<Float4>(rows * row4);            // Q block [Br][d+4], staged once
        var keysThenProbs = SharedMemory.Allocate<Float4>(kBuffer);          // K block [Bc][d+4], then P [Br][Bc+4]
        var values = SharedMemory.Allocate<Float4>(cols * row4);             // V block [Bc][d+4]
        var scores = SharedMemory.Allocate<Float4>(splits * rows * scoreRow / 4); // S partials [splits][Br][Bc+4]
        var rescales = SharedMemory.Allocate<float>(rows);
        var sums = SharedMemory.Allocate<float>(rows * perRow);

        var place = new BlockPlace(rows, a.Heads, a.QueryLength, a.KeySplits);
        var dim = a.HeadDim;
        var width = (dim + 3) / 4 * 4;
        var thread = Group.IdxX;
        var kOffset = a.Key.Offset(place.Batch, 0, place.Head);
        var vOffset = a.Value.Offset(place.Batch, 0, place.Head);
        Stage(queries.Cast<float>(), row4 * 4, 1, q, a.Query.Offset(place.Batch, 0, place.Head), a.Query.Row, place.FirstRow, rows, a.QueryLength, dim, width);

        // Roles: score tile (split, tile); row pass (row, part); output tile (rows g + i·Br/4, column groups c and c + d/8).
        var scoreSplit = thread / tiles;
        var scoreTile = thread - scoreSplit * tiles;
        var passRow = thread / perRow;
        var part = thread - passRow * perRow;
        var query = place.FirstRow + passRow;
        var partKeys = cols / perRow;
        var outRow = thread / outGroups;
        var outGroup = thread - outRow * outGroups;
        var rowStep = rows / 4;
        var runningMax = float.NegativeInfinity;
        var partSum = 0f; // over this thread's keys of its row; summed over the row's parts at the end
        var acc = default(Tile4<VectorPair<Float4>>);

        var keyBegin = place.KeySplit * a.KeyChunk;
        var keyEnd = Math.Min(a.KeyEnd(place.FirstRow, rows), keyBegin + a.KeyChunk);
        for (var first = keyBegin; first < keyEnd; first += cols)
        {
            Stage(keysThenProbs.Cast<float>(), row4 * 4, 1, k, kOffset, a.Key.Row, first, cols, a.KeyLength, dim, width);
            Stage(values.Cast<float>(), row4 * 4, 1, v, vOffset, a.Value.Row, first, cols, a.KeyLength, dim, dim);
            Group.Barrier();

            ScoreTile(queries, keysThenProbs, scores.Cast<float>().SubView(scoreSplit * rows * scoreRow), rows, cols, row4, scoreRow, scoreTile, scoreSplit, splits, width / 4);
            Group.Barrier();

            // Row pass: the block maximum over the whole row, then P for this part's keys.
            var rowAt = passRow * scoreRow / 4;
            var blockMax = float.NegativeInfinity;
            for (var quad = 0; quad < cols / 4; quad++)
                blockMax = MathF.Max(blockMax, MaskedScores(SumSplits(scores, rowAt + quad, rows * scoreRow / 4, splits), a, query, first + 4 * quad, place.Batch, keyPadding).Max);
            var newMax = MathF.Max(runningMax, blockMax);
            // A row that has seen only masked keys keeps max −∞; exp(−∞ − (−∞)) would be NaN.
            var rescale = newMax == float.NegativeInfinity ? 1f : MathF.Exp(runningMax - newMax);
            var sum = 0f;
            for (var quad = part * partKeys / 4; quad < (part + 1) * partKeys / 4; quad++)
            {
                var p = Exponentials(MaskedScores(SumSplits(scores, rowAt + quad, rows * scoreRow / 4, splits), a, query, first + 4 * quad, place.Batch, keyPadding), newMax);
                keysThenProbs[rowAt + quad] = p;
                sum += p.Sum;
            }
            partSum = partSum * rescale + sum;
            runningMax = newMax;
            if (part == 0)
                rescales[passRow] = rescale;
            Group.Barrier();

            acc.ScaleRows(new Float4(rescales[outRow], rescales[outRow + rowStep], rescales[outRow + 2 * rowStep], rescales[outRow + 3 * rowStep]));
            var pAt = outRow * scoreRow / 4;
            var pStep = rowStep * scoreRow / 4;
            for (var key = 0; key < cols; key += 4)
            {
                var y0 = default(VectorPair<Float4>);
                var y1 = default(VectorPair<Float4>);
                var y2 = default(VectorPair<Float4>);
                var y3 = default(VectorPair<Float4>);
                y0.Load(values, key * row4 + outGroup, outGroups);
                y1.Load(values, (key + 1) * row4 + outGroup, outGroups);
                y2.Load(values, (key + 2) * row4 + outGroup, outGroups);
                y3.Load(values, (key + 3) * row4 + outGroup, outGroups);
                var quad = key / 4;
                acc.Inner(
                    keysThenProbs[pAt + quad], keysThenProbs[pAt + pStep + quad], keysThenProbs[pAt + 2 * pStep + quad], keysThenProbs[pAt + 3 * pStep + quad],
                    y0, y1, y2, y3);
            }
            Group.Barrier();
        }

        sums[passRow * perRow + part] = partSum;
        Group.Barrier();
        var store = new AttentionOutputStore(output, partials, logSumExp, sums, a, place, perRow, dim);
        acc.Visit(ref store, outRow, rowStep, 4 * outGroup, outGroups);
        if (part == 0)
            store.Statistics(passRow, runningMax);
    }

    /// <summary>
    /// Writes the forward's O rows (divided by the row sum) and log-sum-exp; when flash-decoding,
    /// the unnormalised O, the max and the sum of this key split instead.
    /// </summary>
    private struct AttentionOutputStore(
        ArrayView<float> output, ArrayView<float> partials, ArrayView<float> logSumExp, ArrayView<float> sums,
        Geometry a, BlockPlace place, int perRow, int dim) : IFloat4Visitor
    {
        private readonly ArrayView<float> output = output;
        private readonly ArrayView<float> partials = partials;
        private readonly ArrayView<float> logSumExp = logSumExp;
        private readonly ArrayView<float> sums = sums;
        private readonly Geometry a = a;
        private readonly BlockPlace place = place;
        private readonly int perRow = perRow;
        private readonly int dim = dim;

        /// <summary>Σ over the row's parts of their sums, in part order.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private readonly float RowSum(int row)
        {
            var total = 0f;
            for (var part = 0; part < perRow; part++)
                total += sums[row * perRow + part];
            return total;
        }

        /// <summary>Start of row (split, batch·head, query) of the flash-decoding scratch [splits, B·H·Tq, d + 2].</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private readonly long PartialIndex(int query) =>
            ((long)place.KeySplit * a.BatchHeads * a.QueryLength + (long)place.BatchHead * a.QueryLength + query) * (dim + 2);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly void Visit(int row, int column, Float4 value)
        {
            var query = place.FirstRow + row;
            if (query >= a.QueryLength)
                return;
            if (a.KeySplits > 1)
            {
                StoreColumns(partials, PartialIndex(query), column, value, 1f);
                return;
            }
            var total = RowSum(row);
            StoreColumns(output, a.Output.Offset(place.Batch, query, place.Head), column, value, total > 0f ? 1f / total : 0f);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private readonly void StoreColumns(ArrayView<float> target, long at, int column, Float4 value, float scale)
        {
            if (column < dim)
                target[at + column] = value.X * scale;
            if (column + 1 < dim)
                target[at + column + 1] = value.Y * scale;
            if (column + 2 < dim)
                target[at + column + 2] = value.Z * scale;
            if (column + 3 < dim)
                target[at + column + 3] = value.W * scale;
        }

        /// <summary>The row's log-sum-exp (or, flash-decoding, its max and sum), by one thread of the row.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly void Statistics(int row, float max)
        {
            var query = place.FirstRow + row;
            if (query >= a.QueryLength)
                return;
            var total = RowSum(row);
            if (a.KeySplits > 1)
            {
                var at = PartialIndex(query);
                partials[at + dim] = max;
                partials[at + dim + 1] = total;
                return;
            }
            logSumExp[(place.BatchHead * a.QueryLength) + query] = total > 0f ? max + MathF.Log(total) : float.NegativeInfinity;
        }
    }

    /// <summary>
    /// Flash-decoding, second pass: per (batch·head, query, column) merges the key splits'
    /// partial O with weights exp(maxₛ − max) / Σ, in split order (deterministic); column 0
    /// also writes the log-sum-exp. Rows whose keys are all masked come out as zeros and −∞.
    /// </summary>
    private static void CombineKernel(
        Index1D index,               // (batch·head·Tq + query)·d + column
        ArrayView<float> output,     // O [B, Tq, H, d] strided
        ArrayView<float> logSumExp,  // [B, H, Tq]
        ArrayView<float> partials,   // [splits, B·H·Tq, d + 2]
        Geometry a)
    {
        var dim = a.HeadDim;
        int element = index;
        var row = element / dim;                       // batch·head·Tq + query
        var column = element - row * dim;
        var rows = (long)a.BatchHeads * a.QueryLength;
        var max = float.NegativeInfinity;
        for (var split = 0; split < a.KeySplits; split++)
            max = MathF.Max(max, partials[(split * rows + row) * (dim + 2) + dim]);
        var total = 0f;
        var sum = 0f;
        if (max != float.NegativeInfinity)
        {
            for (var split = 0; split < a.KeySplits; split++)
            {
                var at = (split * rows + row) * (dim + 2);
                var splitMax = partials[at + dim];
                var weight = splitMax == float.NegativeInfinity ? 0f : MathF.Exp(splitMax - max);
                total += weight * partials[at + dim + 1];
                sum += weight * partials[at + column];
            }
        }
        var batchHead = row / a.QueryLength;
        var query = row - batchHead * a.QueryLength;
        var batch = batchHead / a.Heads;
        output[a.Output.Offset(batch, query, batchHead - batch * a.Heads) + column] = total > 0f ? sum / total : 0f;
        if (column == 0)
            logSumExp[row] = total > 0f ? max + MathF.Log(total) : float.NegativeInfinity;
    }

    /// <summary>
    /// Constants of the register-tiled gradient kernels: blocks of Br queries × Bc keys, staged
    /// rows of d + 4 floats (Float4s), score rows of Bc + 4; S and dP tiles split among all
    /// threads (<see cref="IRegisterBlocks"/>).
    /// </summary>
    private static class GradientBlocks<TBlocks>
        where TBlocks : struct, IRegisterBlocks
    {
        /// <summary>Br.</summary>
        public static int Queries => default(TBlocks).GradientQueries;

        /// <summary>Bc.</summary>
        public static int Keys => default(TBlocks).GradientKeys;

        /// <summary>Float4s per staged row of Q, dO, K or V.</summary>
        public static int Row4 => (default(TBlocks).MaxHeadDim + 4) / 4;

        /// <summary>Floats per row of S, dP, P or dS.</summary>
        public static int ScoreRow => Keys + 4;

        /// <summary>4×4 score tiles per product.</summary>
        public static int Tiles => Queries / 4 * (Keys / 4);

        /// <summary>Head-dimension splits of each score tile.</summary>
        public static int Splits => default(TBlocks).Threads / (2 * Tiles);

        /// <summary>Float4 columns of a dQ, dK or dV row (each thread owns one).</summary>
        public static int OutGroups => default(TBlocks).MaxHeadDim / 4;

        /// <summary>Float4s of one product's partial scores, [splits][Br][Bc + 4].</summary>
        public static int ProductFloat4s => Splits * Queries * ScoreRow / 4;
    }

    /// <summary>Q and dO rows [first, first + Br) of the group's (batch, head) into queryPair ([2][Br][d+4]: Q, then dO), zeros past Tq and d.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StageQueries<TBlocks>(ArrayView<Float4> queryPair, ArrayView<float> q, ArrayView<float> dOutput, in Geometry a, int batch, int head, int first)
        where TBlocks : struct, IRegisterBlocks
    {
        var rows = GradientBlocks<TBlocks>.Queries;
        var rowFloats = 4 * GradientBlocks<TBlocks>.Row4;
        var width = (a.HeadDim + 3) / 4 * 4;
        Stage(queryPair.Cast<float>(), rowFloats, 1, q, a.Query.Offset(batch, 0, head), a.Query.Row, first, rows, a.QueryLength, a.HeadDim, width);
        Stage(queryPair.Cast<float>().SubView(rows * rowFloats), rowFloats, 1, dOutput, a.OutputGradient.Offset(batch, 0, head), a.OutputGradient.Row, first, rows, a.QueryLength, a.HeadDim, width);
    }

    /// <summary>K and V rows [first, first + Bc) into keyPair ([2][Bc][d+4]: K, then V), zeros past Tk and d.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StageKeys<TBlocks>(ArrayView<Float4> keyPair, ArrayView<float> k, ArrayView<float> v, in Geometry a, int batch, int head, int first)
        where TBlocks : struct, IRegisterBlocks
    {
        var rows = GradientBlocks<TBlocks>.Keys;
        var rowFloats = 4 * GradientBlocks<TBlocks>.Row4;
        var width = (a.HeadDim + 3) / 4 * 4;
        Stage(keyPair.Cast<float>(), rowFloats, 1, k, a.Key.Offset(batch, 0, head), a.Key.Row, first, rows, a.KeyLength, a.HeadDim, width);
        Stage(keyPair.Cast<float>().SubView(rows * rowFloats), rowFloats, 1, v, a.Value.Offset(batch, 0, head), a.Value.Row, first, rows, a.KeyLength, a.HeadDim, width);
    }

    /// <summary>
    /// The gradient kernels' step per (query block, key block), after Q, dO, K, V and the rows'
    /// statistics are staged: S = Q·Kᵀ and dP = dO·Vᵀ in 4×4 register tiles (each thread one
    /// tile of one product over one head-dimension split; the pairs sit in one allocation each,
    /// so a thread picks its product by offset — a select between two views would lose the
    /// 16-byte alignment ILGPU needs for 128-bit loads), then P and dS elementwise in place
    /// (<see cref="GradientScores"/>). Two barriers.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GradientBlock<TBlocks>(
        ArrayView<Float4> queryPair, ArrayView<Float4> keyPair, ArrayView<Float4> products, ArrayView<float> lse, ArrayView<float> delta,
        in Geometry a, int batch, ArrayView<int> keyPadding, int firstQuery, int firstKey, bool probabilitiesToo)
        where TBlocks : struct, IRegisterBlocks
    {
        var rows = GradientBlocks<TBlocks>.Queries;
        var cols = GradientBlocks<TBlocks>.Keys;
        var row4 = GradientBlocks<TBlocks>.Row4;
        var tiles = GradientBlocks<TBlocks>.Tiles;
        var splits = GradientBlocks<TBlocks>.Splits;
        var product = Group.IdxX / (splits * tiles);
        var split = (Group.IdxX - product * splits * tiles) / tiles;
        var tile = Group.IdxX - product * splits * tiles - split * tiles;
        ScoreTile(
            queryPair.SubView(product * rows * row4), keyPair.SubView(product * cols * row4),
            products.Cast<float>().SubView((product * splits + split) * rows * GradientBlocks<TBlocks>.ScoreRow),
            rows, cols, row4, GradientBlocks<TBlocks>.ScoreRow, tile, split, splits, (a.HeadDim + 3) / 4);
        Group.Barrier();
        var productLength = GradientBlocks<TBlocks>.ProductFloat4s;
        GradientScores(
            products.SubView(0, productLength), products.SubView(productLength, productLength), lse, delta, a, batch, keyPadding,
            firstQuery, firstKey, rows, cols, splits, default(TBlocks).Threads, probabilitiesToo);
        Group.Barrier();
    }

    /// <summary>
    /// dQ for GPUs. Group: one (batch, head, block of Br queries); Q, dO and their rows'
    /// log-sum-exp and D staged once; per visible key block: stage K and V, then
    /// <see cref="GradientBlock{TBlocks}"/> (S, dP, dS); every thread adds dS·K into its 4×4 tile
    /// of dQ (4 loads of dS and 4 of K per 64 multiply-adds).
    /// </summary>
    private static void RegisterQueryGradientKernel<TBlocks>(
        ArrayView<float> dq,         // [B, Tq, H, d] strided
        ArrayView<float> q,          // [B, Tq, H, d] strided
        ArrayView<float> k,          // [B, Tk, H, d] strided
        ArrayView<float> v,          // [B, Tk, H, d] strided
        ArrayView<float> dOutput,    // [B, Tq, H, d] strided
        ArrayView<float> logSumExp,  // [B, H, Tq]
        ArrayView<float> rowDot,     // [B, H, Tq]
        ArrayView<int> keyPadding,   // [B, Tk]
        Geometry a)
        where TBlocks : struct, IRegisterBlocks
    {
        var rows = GradientBlocks<TBlocks>.Queries;
        var cols = GradientBlocks<TBlocks>.Keys;
        var row4 = GradientBlocks<TBlocks>.Row4;
        var scoreRow = GradientBlocks<TBlocks>.ScoreRow;
        var outGroups = GradientBlocks<TBlocks>.OutGroups;
        var queryPair = SharedMemory.Allocate<Float4>(2 * rows * row4);                         // Q, dO blocks [2][Br][d+4], staged once
        var keyPair = SharedMemory.Allocate<Float4>(2 * cols * row4);                           // K, V blocks [2][Bc][d+4]
        var products = SharedMemory.Allocate<Float4>(2 * GradientBlocks<TBlocks>.ProductFloat4s); // S partials (then P), dP partials (then dS)
        var lse = SharedMemory.Allocate<float>(rows);
        var delta = SharedMemory.Allocate<float>(rows);

        var place = new BlockPlace(rows, a.Heads, a.QueryLength, 1);
        StageQueries<TBlocks>(queryPair, q, dOutput, a, place.Batch, place.Head, place.FirstRow);
        StageRowStatistics(lse, delta, logSumExp, rowDot, place.BatchHead * a.QueryLength, place.FirstRow, rows, a.QueryLength);
        var gradScores = products.SubView(GradientBlocks<TBlocks>.ProductFloat4s);

        // This thread's dQ tile: rows g + i·Br/4, column group c.
        var outRow = Group.IdxX / outGroups;
        var outGroup = Group.IdxX - outRow * outGroups;
        var rowStep = rows / 4;
        var acc = default(Tile4<Float4>);

        var keyEnd = a.KeyEnd(place.FirstRow, rows);
        for (var first = 0; first < keyEnd; first += cols)
        {
            StageKeys<TBlocks>(keyPair, k, v, a, place.Batch, place.Head, first);
            Group.Barrier();
            GradientBlock<TBlocks>(queryPair, keyPair, products, lse, delta, a, place.Batch, keyPadding, place.FirstRow, first, probabilitiesToo: false);

            var dsAt = outRow * scoreRow / 4;
            var dsStep = rowStep * scoreRow / 4;
            for (var key = 0; key < cols; key += 4)
            {
                var quad = key / 4;
                acc.Inner(
                    gradScores[dsAt + quad], gradScores[dsAt + dsStep + quad], gradScores[dsAt + 2 * dsStep + quad], gradScores[dsAt + 3 * dsStep + quad],
                    keyPair[key * row4 + outGroup], keyPair[(key + 1) * row4 + outGroup], keyPair[(key + 2) * row4 + outGroup], keyPair[(key + 3) * row4 + outGroup]);
            }
            Group.Barrier();
        }

        var store = new GradientStore(dq, a.QueryGradient, place.Batch, place.Head, place.FirstRow, a.QueryLength, a.HeadDim, a.Scale);
        acc.Visit(ref store, outRow, rowStep, 4 * outGroup, outGroups);
    }

    /// <summary>
    /// dK and dV for GPUs. Group: one (batch, head, block of Bc keys); K and V staged once; per
    /// query block that can see them: stage Q, dO and the rows' log-sum-exp and D, then
    /// <see cref="GradientBlock{TBlocks}"/> (S, dP, P, dS); every thread adds Pᵀ·dO and dSᵀ·Q
    /// into its 4-key × 4-column tiles of dV and dK (outer products: 4 loads per 32 multiply-adds).
    /// </summary>
    private static void RegisterKeyValueGradientKernel<TBlocks>(
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
        where TBlocks : struct, IRegisterBlocks
    {
        var rows = GradientBlocks<TBlocks>.Queries;
        var cols = GradientBlocks<TBlocks>.Keys;
        var row4 = GradientBlocks<TBlocks>.Row4;
        var scoreRow = GradientBlocks<TBlocks>.ScoreRow;
        var outGroups = GradientBlocks<TBlocks>.OutGroups;
        var keyPair = SharedMemory.Allocate<Float4>(2 * cols * row4);                           // K, V blocks [2][Bc][d+4], staged once
        var queryPair = SharedMemory.Allocate<Float4>(2 * rows * row4);                         // Q, dO blocks [2][Br][d+4]
        var products = SharedMemory.Allocate<Float4>(2 * GradientBlocks<TBlocks>.ProductFloat4s); // S partials (then P), dP partials (then dS)
        var lse = SharedMemory.Allocate<float>(rows);
        var delta = SharedMemory.Allocate<float>(rows);

        var place = new BlockPlace(cols, a.Heads, a.KeyLength, 1);
        var firstKey = place.FirstRow;
        StageKeys<TBlocks>(keyPair, k, v, a, place.Batch, place.Head, firstKey);
        var gradOut = queryPair.SubView(rows * row4);
        var gradScores = products.SubView(GradientBlocks<TBlocks>.ProductFloat4s);

        // This thread's dK and dV tiles: keys 4g … 4g+3, column group c.
        var keyGroup = Group.IdxX / outGroups;
        var outGroup = Group.IdxX - keyGroup * outGroups;
        var dkAcc = default(Tile4<Float4>);
        var dvAcc = default(Tile4<Float4>);

        for (var first = a.QueryStart(firstKey); first < a.QueryLength; first += rows)
        {
            StageQueries<TBlocks>(queryPair, q, dOutput, a, place.Batch, place.Head, first);
            StageRowStatistics(lse, delta, logSumExp, rowDot, place.BatchHead * a.QueryLength, first, rows, a.QueryLength);
            Group.Barrier();
            GradientBlock<TBlocks>(queryPair, keyPair, products, lse, delta, a, place.Batch, keyPadding, first, firstKey, probabilitiesToo: true);

            for (var row = 0; row < rows; row++)
            {
                var at = row * scoreRow / 4 + keyGroup;
                dvAcc.Outer(products[at], gradOut[row * row4 + outGroup]);
                dkAcc.Outer(gradScores[at], queryPair[row * row4 + outGroup]);
            }
            Group.Barrier();
        }

        var dkStore = new GradientStore(dk, a.KeyGradient, place.Batch, place.Head, firstKey, a.KeyLength, a.HeadDim, a.Scale);
        dkAcc.Visit(ref dkStore, 4 * keyGroup, 1, 4 * outGroup, outGroups);
        var dvStore = new GradientStore(dv, a.ValueGradient, place.Batch, place.Head, firstKey, a.KeyLength, a.HeadDim, 1f);
        dvAcc.Visit(ref dvStore, 4 * keyGroup, 1, 4 * outGroup, outGroups);
    }

    /// <summary>Log-sum-exp and D of query rows [first, first + count) into shared memory (0 past the last query).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StageRowStatistics(
        ArrayView<float> lse, ArrayView<float> delta, ArrayView<float> logSumExp, ArrayView<float> rowDot,
        int statOffset, int first, int count, int queryLength)
    {
        for (var i = Group.IdxX; i < count; i += Group.DimX)
        {
            var query = first + i;
            lse[i] = query < queryLength ? logSumExp[statOffset + query] : 0f;
            delta[i] = query < queryLength ? rowDot[statOffset + query] : 0f;
        }
    }

    /// <summary>
    /// The gradient kernels' elementwise step over a [Br queries][Bc keys] block: sums the score
    /// and dP partials, P = exp(scale·S − lse) (0 where masked: a fully masked row has lse −∞),
    /// dS = P∘(dP − D); writes dS over the first dP split (and P over the first S split when
    /// <paramref name="probabilitiesToo"/>). Each 4-key group is read and written by one thread.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GradientScores(
        ArrayView<Float4> scores, ArrayView<Float4> gradProbs, ArrayView<float> lse, ArrayView<float> delta,
        in Geometry a, int batch, ArrayView<int> keyPadding, int firstQuery, int firstKey,
        int rows, int cols, int splits, int threads, bool probabilitiesToo)
    {
        var quads = cols / 4;
        var splitStride = rows * (cols + 4) / 4;
        for (var e = Group.IdxX; e < rows * quads; e += threads)
        {
            var row = e / quads;
            var quad = e - row * quads;
            var at = row * (cols + 4) / 4 + quad;
            var s = MaskedScores(SumSplits(scores, at, splitStride, splits), a, firstQuery + row, firstKey + 4 * quad, batch, keyPadding);
            var p = Exponentials(s, lse[row]);
            var dp = SumSplits(gradProbs, at, splitStride, splits);
            var d = delta[row];
            gradProbs[at] = new Float4(p.X * (dp.X - d), p.Y * (dp.Y - d), p.Z * (dp.Z - d), p.W * (dp.W - d));
            if (probabilitiesToo)
                scores[at] = p;
        }
    }

    /// <summary>Writes a gradient tile (dQ, dK or dV rows first, first+1, …) times <paramref name="scale"/>, inside [length, d) only.</summary>
    private readonly struct GradientStore(
        ArrayView<float> target, AttentionStrides strides, int batch, int head, int first, int length, int dim, float scale) : IFloat4Visitor
    {
        private readonly ArrayView<float> target = target;
        private readonly AttentionStrides strides = strides;
        private readonly int batch = batch;
        private readonly int head = head;
        private readonly int first = first;
        private readonly int length = length;
        private readonly int dim = dim;
        private readonly float scale = scale;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Visit(int row, int column, Float4 value)
        {
            var position = first + row;
            if (position >= length)
                return;
            var at = strides.Offset(batch, position, head) + column;
            if (column < dim)
                target[at] = value.X * scale;
            if (column + 1 < dim)
                target[at + 1] = value.Y * scale;
            if (column + 2 < dim)
                target[at + 2] = value.Z * scale;
            if (column + 3 < dim)
                target[at + 3] = value.W * scale;
        }
    }
}
