using GpuTransformer.Kernels;
using GpuTransformer.Kernels.Backends;

namespace GpuTransformer.Layers;

/// <summary>
/// Self-attention (<c>self_attn</c>): queries, keys and values all from one stream x, projected
/// with one product into a [B, T, 3E] buffer that the fused attention kernel reads through
/// strides; <see cref="Causal"/> hides later positions (the decoder's mask), a [B, T] key padding
/// mask (1 = padded key) hides keys. For token-by-token decoding, <see cref="ForwardCached"/>
/// appends the new positions' keys and values to a cache and attends over all of them.
/// <para>Keeps for the backward: its input x (a reference), the projected q | k | v, and what <see cref="MultiHeadAttention"/> keeps.</para>
/// </summary>
public sealed class SelfAttention : MultiHeadAttention
{
    private readonly Tensor<float> projected;        // qkv [B, T, 3E]; a cached step: q [B, Tn, E]
    private readonly Tensor<float> projectedGradient;
    private readonly Tensor<float> inputGradient;
    private Tensor<float>? input;

    /// <summary>Multi-head self-attention with one fused q, k, v projection [3E, E].</summary>
    /// <param name="device">Where the weights and buffers live.</param>
    /// <param name="dModel">E, the width of a token vector.</param>
    /// <param name="heads">H; must divide E.</param>
    /// <param name="causal">Hide keys after each query (the decoder's and the language model's mask).</param>
    /// <param name="init">Seeds the weights' start.</param>
    public SelfAttention(ComputeDevice device, int dModel, int heads, bool causal, ParameterInitializer init)
        : base(device, dModel, heads, init)
    {
        Causal = causal;
        projected = Buffer<float>(1);
        projectedGradient = Buffer<float>(1);
        inputGradient = Buffer<float>(1);
    }

    /// <summary>Whether later positions are hidden.</summary>
    public bool Causal { get; }

    /// <summary>Device bytes of its buffers after a step over [B, T]: qkv [B, T, 3E] (+ dqkv and dx when training) and what every attention holds.</summary>
    internal static long ActivationBytes(int batch, int length, int dModel, int heads, bool training, int unfusedAttentionMaxLength)
    {
        var rows = (long)batch * length;
        return (sizeof(float) * ((3 * rows * dModel) + (training ? (3 * rows * dModel) + (rows * dModel) : 0)))
            + SharedActivationBytes(batch, length, length, dModel, heads, training, unfusedAttentionMaxLength);
    }

    /// <summary>
    /// self_attn(x). // x [B, T, E], keyPadding [B, T] (1 = padded) → [B, T, E]
    /// </summary>
    /// <exception cref="ArgumentException">x is not [B, T, E] or the mask is not [B, T].</exception>
    public Tensor<float> Forward(Tensor<float> x, Tensor<int>? keyPadding = null)
    {
        var (batch, length) = Sequence(x, nameof(x));
        RequireMask(keyPadding, batch, length, nameof(keyPadding));
        var e = DModel;

        // q | k | v = x·W_inᵀ + b_in in one product.                         // [B, T, 3E]
        projected.Resize(batch, length, 3 * e);
        Project(projected.View, x, firstBlock: 0, blocks: 3);
        var fused = AttentionStrides.Fused(length, Heads, HeadDim, 3);
        input = x;
        return Attend(batch, length, length, projected, fused, projected, keyOffset: e, fused, keyPadding, Causal, causalOffset: 0);
    }

    /// <summary>dx, accumulating every parameter gradient. // dy [B, T, E] → dx [B, T, E]</summary>
    public Tensor<float> Backward(Tensor<float> dOutput)
    {
        var x = input ?? throw new InvalidOperationException("SelfAttention.Backward needs a Forward (not a cached step) first.");
        var e = DModel;
        var dqkv = projectedGradient.ResizeLike(projected, 3 * e);             // [B, T, 3E], mirrors qkv
        AttendBackward(dqkv.View, dqkv.View.SubView(e), dqkv.View.SubView(2 * e), dOutput);
        return ProjectBackward(inputGradient, dqkv, x, firstBlock: 0, blocks: 3);
    }

    /// <summary>
    /// <see cref="Forward"/> for new positions only (no backward): projects the Tn new tokens,
    /// appends their keys and values to <paramref name="cache"/> after the
    /// <paramref name="cachedLength"/> cached ones and attends over all of them with the causal
    /// diagonal shifted by the cached length.
    /// With <paramref name="residual"/> (evaluation only) the output is added into it in place and it is returned.
    /// // x [B, Tn, E], cache [B, Tmax, 2E], keyPadding [B, cachedLength + Tn] → [B, Tn, E]
    /// </summary>
    internal Tensor<float> ForwardCached(Tensor<float> x, Tensor<float> cache, int cachedLength, Tensor<int>? keyPadding, Tensor<float>? residual = null)
    {
        var (batch, newLength) = Sequence(x, nameof(x));
        var maxLength = cache.Dim(1);
        var keyLength = cachedLength + newLength;
        if (cache.Dim(0) != batch || keyLength > maxLength)
            throw new ArgumentException($"x {x} does not fit the cache {cache} after {cachedLength} cached positions.", nameof(x));
        RequireMask(keyPadding, batch, keyLength, nameof(keyPadding));
        var e = DModel;

        // q = x·W_qᵀ + b_q.                                                   // [B, Tn, E]
        projected.Resize(batch, newLength, e);
        Project(projected.View, x, firstBlock: 0, blocks: 1);
        // k | v of the new positions, written straight into the cache rows cachedLength… of every sequence.
        var appended = cache.View.SubView((long)cachedLength * 2 * e);
        Project(appended, x, firstBlock: 1, blocks: 2, rowsPerSequence: newLength, outputSequenceStride: (long)maxLength * 2 * e);
        var kvStrides = new AttentionStrides((long)maxLength * 2 * e, 2 * e, HeadDim);
        input = null;
        return Attend(batch, newLength, keyLength, projected, AttentionStrides.Dense(newLength, Heads, HeadDim), cache, keyOffset: 0, kvStrides, keyPadding, Causal, causalOffset: cachedLength, residual);
    }
}
