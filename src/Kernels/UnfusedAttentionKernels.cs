using GpuTransformer.Kernels.Backends;
using ILGPU;
using ILGPU.Runtime;

namespace GpuTransformer.Kernels;

/// <summary>
/// Attention from the general kernels, with the probabilities in memory: the same contract as
/// <see cref="AttentionKernels"/> (strided Q, K, V, O, causal mask with offset, key-padding
/// mask, scale; a fully masked query row outputs zeros and gets zero gradients), but the
/// forward keeps P [B, H, Tq, Tk] for the backward instead of the row log-sum-exp.
/// <para>
/// Forward: S = scale·Q·Kᵀ as one two-level batched <see cref="MatmulKernels"/> product (NT,
/// heads read in place through their strides) into [B, H, Tq, Tk]; padded keys set to −∞
/// (this family's one kernel); P = <see cref="SoftmaxKernels"/> in place with the causal mask;
/// O = P·V (NN). Backward: dP = dO·Vᵀ (NT), dV = Pᵀ·dO (TN), dS = softmax backward, dQ =
/// scale·dS·K (NN), dK = scale·dSᵀ·Q (TN): six products over T² instead of the fused
/// backward's recomputation of S and dP inside each of its two kernels. The profiler counts
/// each pass as one Attention row (the products and softmax run inside its scope) with the
/// FLOPs of the full T² products it does.
/// </para>
/// <para>
/// Why both: on PoCL the tiled matmul runs near the CPU's peak while the fused kernels' inner
/// loops are short, so forward+backward is faster unfused up to a measured length
/// (<see cref="KernelTuning.UnfusedAttentionMaxLength"/>); the forward alone stays faster fused
/// there, and on GPUs the fused kernels win everywhere and need no T² memory.
/// </para>
/// </summary>
public sealed class UnfusedAttentionKernels : IKernelFamily<UnfusedAttentionKernels>
{
    private readonly ComputeDevice device;
    private readonly MatmulKernels matmul;
    private readonly SoftmaxKernels softmax;
    private readonly int groupSize;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<int>, int, int> maskKeys;

    private UnfusedAttentionKernels(ComputeDevice device)
    {
        this.device = device;
        matmul = device.Kernels<MatmulKernels>();
        softmax = device.Kernels<SoftmaxKernels>();
        groupSize = device.Tuning.ElementGroupSize;
        Require.Positive(groupSize, nameof(KernelTuning.ElementGroupSize));
        maskKeys = device.Accelerator.LoadKernel<ArrayView<float>, ArrayView<int>, int, int>(MaskKeysKernel);
    }

    /// <inheritdoc/>
    public static UnfusedAttentionKernels Create(ComputeDevice device) => new(device);

    /// <inheritdoc/>
    public static IEnumerable<KernelEntry> EntryPoints(KernelTuning tuning) => [KernelEntry.Of(MaskKeysKernel)];

    /// <summary>Floats of P (and of the backward's dS scratch) for <paramref name="shape"/>: B·H·Tq·Tk.</summary>
    /// <exception cref="ArgumentException">A size is not positive or the product overflows.</exception>
    public static int ScoresLength(AttentionShape shape)
    {
        if (shape.Batch > 0 && shape.Heads > 0 && shape.QueryLength > 0 && shape.KeyLength > 0
            && (long)shape.Batch * shape.Heads * shape.QueryLength <= int.MaxValue)
        {
            var count = (long)shape.Batch * shape.Heads * shape.QueryLength * shape.KeyLength;
            if (count <= int.MaxValue)
                return (int)count;
        }
        return Require.Product($"attention scores [B, H, Tq, Tk] of {shape}", shape.Batch, shape.Heads, shape.QueryLength, shape.KeyLength);
    }

    /// <summary>
    /// Forward pass: P = softmax(mask(scale·Q·Kᵀ)), output = P·V per batch and head; P is
    /// kept for <see cref="Backward"/>.
    /// </summary>
    /// <param name="output">O [B, Tq, H, d] with <see cref="AttentionOptions.Output"/> strides (written; other elements untouched).</param>
    /// <param name="probabilities">P [B, H, Tq, Tk], dense (written): masked entries 0, a fully masked row all 0.</param>
    /// <param name="q">Q [B, Tq, H, d] with <see cref="AttentionOptions.Query"/> strides.</param>
    /// <param name="k">K [B, Tk, H, d] with <see cref="AttentionOptions.Key"/> strides.</param>
    /// <param name="v">V [B, Tk, H, d] with <see cref="AttentionOptions.Value"/> strides.</param>
    /// <param name="shape">B, H, Tq, Tk, d.</param>
    /// <param name="options">Masks, scale and strides.</param>
    /// <exception cref="ArgumentException">As <see cref="AttentionKernels.Forward"/>, or <paramref name="probabilities"/> is too short.</exception>
    public void Forward(
        ArrayView<float> output,
        ArrayView<float> probabilities,
        ArrayView<float> q,
        ArrayView<float> k,
        ArrayView<float> v,
        AttentionShape shape,
        in AttentionOptions options = default)
    {
        var g = AttentionKernels.Validate(shape, options);
        var scores = Scores(probabilities, shape, nameof(probabilities));
        var outputs = AttentionKernels.CheckOperand(output, g.Output, shape, shape.QueryLength, nameof(output), written: true);
        AttentionKernels.CheckDistinct(
            [outputs, new(scores, nameof(probabilities))],
            [
                AttentionKernels.CheckOperand(q, g.Query, shape, shape.QueryLength, nameof(q)),
                AttentionKernels.CheckOperand(k, g.Key, shape, shape.KeyLength, nameof(k)),
                AttentionKernels.CheckOperand(v, g.Value, shape, shape.KeyLength, nameof(v)),
            ]);
        Require.Distinct(outputs.View, nameof(output), scores, nameof(probabilities));
        var (tq, tk, d) = (shape.QueryLength, shape.KeyLength, shape.HeadDim);
        using var profile = device.Profile("Attention", "unfused forward", 2 * 2.0 * scores.Length * d);

        // S = scale·Q·Kᵀ; padded keys −∞; P = softmax(S) in place (causal mask there); O = P·V.
        matmul.Multiply(scores, q, k, tq, tk, d, MatmulLayout.NT, new MatmulEpilogue { Alpha = g.Scale },
            OperandsToScores(shape, g.Query, g.Key), lda: g.Query.Row, ldb: g.Key.Row, ldc: tk);
        if (options.KeyPaddingMask.IsValid)
            maskKeys(device.Stream, RowGrid.Config(shape.Batch * shape.Heads * tq, tk, groupSize), scores, options.KeyPaddingMask, shape.Heads * tq, tk);
        softmax.Forward(scores, scores, shape.Batch * shape.Heads * tq, tk, Mask(shape, options));
        matmul.Multiply(output, scores, v, tq, d, tk, MatmulLayout.NN, default,
            ScoresToOperand(shape, g.Value, g.Output), lda: tk, ldb: g.Value.Row, ldc: g.Output.Row);
    }

    /// <summary>
    /// Backward pass: dQ, dK, dV from dO and the forward's P. Gradients are written, not
    /// accumulated (elements of the gradient views outside their strided heads are untouched, so
    /// dQ, dK and dV may interleave in one dQKV buffer).
    /// </summary>
    /// <param name="dq">dQ [B, Tq, H, d] with <see cref="AttentionOptions.QueryGradient"/> strides (written).</param>
    /// <param name="dk">dK [B, Tk, H, d] with <see cref="AttentionOptions.KeyGradient"/> strides (written).</param>
    /// <param name="dv">dV [B, Tk, H, d] with <see cref="AttentionOptions.ValueGradient"/> strides (written).</param>
    /// <param name="dScores">Scratch [B, H, Tq, Tk]: receives dP, then dS.</param>
    /// <param name="dOutput">dO [B, Tq, H, d] with <see cref="AttentionOptions.OutputGradient"/> strides.</param>
    /// <param name="probabilities">P [B, H, Tq, Tk] of the forward (read only).</param>
    /// <param name="q">Q as in the forward.</param>
    /// <param name="k">K as in the forward.</param>
    /// <param name="v">V as in the forward.</param>
    /// <param name="shape">B, H, Tq, Tk, d.</param>
    /// <param name="options">The forward's options.</param>
    /// <exception cref="ArgumentException">As <see cref="AttentionKernels.Backward"/>, or <paramref name="dScores"/> or <paramref name="probabilities"/> is too short, or they overlap.</exception>
    public void Backward(
        ArrayView<float> dq,
        ArrayView<float> dk,
        ArrayView<float> dv,
        ArrayView<float> dScores,
        ArrayView<float> dOutput,
        ArrayView<float> probabilities,
        ArrayView<float> q,
        ArrayView<float> k,
        ArrayView<float> v,
        AttentionShape shape,
        in AttentionOptions options = default)
    {
        var g = AttentionKernels.Validate(shape, options);
        var p = Scores(probabilities, shape, nameof(probabilities));
        var ds = Scores(dScores, shape, nameof(dScores));
        var dqPart = AttentionKernels.CheckOperand(dq, g.QueryGradient, shape, shape.QueryLength, nameof(dq), written: true);
        var dkPart = AttentionKernels.CheckOperand(dk, g.KeyGradient, shape, shape.KeyLength, nameof(dk), written: true);
        var dvPart = AttentionKernels.CheckOperand(dv, g.ValueGradient, shape, shape.KeyLength, nameof(dv), written: true);
        AttentionKernels.CheckDistinct(
            [dqPart, dkPart, dvPart, new(ds, nameof(dScores))],
            [
                AttentionKernels.CheckOperand(dOutput, g.OutputGradient, shape, shape.QueryLength, nameof(dOutput)),
                new(p, nameof(probabilities)),
                AttentionKernels.CheckOperand(q, g.Query, shape, shape.QueryLength, nameof(q)),
                AttentionKernels.CheckOperand(k, g.Key, shape, shape.KeyLength, nameof(k)),
                AttentionKernels.CheckOperand(v, g.Value, shape, shape.KeyLength, nameof(v)),
            ]);
        AttentionKernels.CheckDistinct([new(ds, nameof(dScores))], [dqPart, dkPart, dvPart]);
        var (tq, tk, d) = (shape.QueryLength, shape.KeyLength, shape.HeadDim);
        var scaled = new MatmulEpilogue { Alpha = g.Scale };
        using var profile = device.Profile("Attention", "unfused backward", 4 * 2.0 * ds.Length * d);

        // dP = dO·Vᵀ; dV = Pᵀ·dO; dS = softmax backward (in place; 0 where P is masked); dQ = scale·dS·K; dK = scale·dSᵀ·Q.
        matmul.Multiply(ds, dOutput, v, tq, tk, d, MatmulLayout.NT, default,
            OperandsToScores(shape, g.OutputGradient, g.Value), lda: g.OutputGradient.Row, ldb: g.Value.Row, ldc: tk);
        matmul.Multiply(dv, p, dOutput, tk, d, tq, MatmulLayout.TN, default,
            ScoresToOperand(shape, g.OutputGradient, g.ValueGradient), lda: tk, ldb: g.OutputGradient.Row, ldc: g.ValueGradient.Row);
        softmax.Backward(ds, p, ds, shape.Batch * shape.Heads * tq, tk, Mask(shape, options));
        matmul.Multiply(dq, ds, k, tq, d, tk, MatmulLayout.NN, scaled,
            ScoresToOperand(shape, g.Key, g.QueryGradient), lda: tk, ldb: g.Key.Row, ldc: g.QueryGradient.Row);
        matmul.Multiply(dk, ds, q, tk, d, tq, MatmulLayout.TN, scaled,
            ScoresToOperand(shape, g.Query, g.KeyGradient), lda: tk, ldb: g.Query.Row, ldc: g.KeyGradient.Row);
    }

    /// <summary>The first B·H·Tq·Tk floats of <paramref name="view"/>, or an ArgumentException naming it.</summary>
    private static ArrayView<float> Scores(ArrayView<float> view, AttentionShape shape, string name)
    {
        var count = ScoresLength(shape);
        if (view.Length < count)
            Require.Holds(view, count, name, $"[B, H, Tq, Tk] = [{shape.Batch}, {shape.Heads}, {shape.QueryLength}, {shape.KeyLength}]");
        return view.SubView(0, count);
    }

    /// <summary>The softmax's causal mask (rows are B·H·Tq queries over Tk keys), or none.</summary>
    private static SoftmaxOptions? Mask(AttentionShape shape, in AttentionOptions options) =>
        options.Causal ? SoftmaxOptions.CausalMask(shape.QueryLength, options.CausalOffset) : null;

    /// <summary>
    /// Per-head products of two [B, T, H, d] operands into dense [B, H, Tq, Tk] scores: one
    /// head of an operand is a [T, d] matrix at b·Batch + h·Head with row stride Row.
    /// </summary>
    private static MatmulBatch OperandsToScores(AttentionShape shape, AttentionStrides a, AttentionStrides b) =>
        new(shape.Batch, a.Batch, b.Batch, (long)shape.Heads * shape.QueryLength * shape.KeyLength,
            shape.Heads, a.Head, b.Head, (long)shape.QueryLength * shape.KeyLength);

    /// <summary>Per-head products of dense [B, H, Tq, Tk] scores with a [B, T, H, d] operand into another.</summary>
    private static MatmulBatch ScoresToOperand(AttentionShape shape, AttentionStrides operand, AttentionStrides result) =>
        new(shape.Batch, (long)shape.Heads * shape.QueryLength * shape.KeyLength, operand.Batch, result.Batch,
            shape.Heads, (long)shape.QueryLength * shape.KeyLength, operand.Head, result.Head);

    // One thread per (row (b·H + h)·Tq + i, key j): S = −∞ where key j of sequence b is padding.
    private static void MaskKeysKernel(ArrayView<float> scores, ArrayView<int> keyPadding, int rowsPerSequence, int keys)
    {
        var (row, j) = (RowGrid.Row, RowGrid.Column);
        if (j < keys && keyPadding[(row / rowsPerSequence * keys) + j] != 0)
            scores[((long)row * keys) + j] = float.NegativeInfinity;
    }
}
