using GpuTransformer.Kernels.Backends;

namespace GpuTransformer.Layers;

/// <summary>
/// PyTorch's <c>nn.TransformerEncoderLayer</c> (batch_first): self-attention then the
/// feed-forward network, each inside a residual connection with its norm and dropout.
/// Post-LN (the paper): x = norm1(x + dropout1(self_attn(x))), x = norm2(x + dropout2(FFN(x)));
/// pre-LN (norm_first): x = x + dropout1(self_attn(norm1(x))), x = x + dropout2(FFN(norm2(x))).
/// State_dict names: <c>self_attn.*</c>, <c>linear1.*</c>, <c>linear2.*</c>, <c>norm1.*</c>, <c>norm2.*</c>.
/// A causal encoder layer is the decoder-only language model's block.
/// <para>Keeps for the backward: what its sub-layers keep.</para>
/// </summary>
public sealed class EncoderLayer : Module
{
    /// <summary>One layer; <paramref name="causal"/> masks later positions (the language model's block).</summary>
    public EncoderLayer(ComputeDevice device, LayerConfig config, bool causal, DropoutStream dropoutStream, ParameterInitializer init)
        : base(device)
    {
        ArgumentNullException.ThrowIfNull(config);
        NormFirst = config.NormFirst;
        SelfAttention = Child("self_attn", new SelfAttention(device, config.DModel, config.Heads, causal, init));
        FeedForward = Child("", new FeedForward(device, config.DModel, config.DimFeedforward, config.Activation, config.Dropout, dropoutStream, init));
        Norm1 = Child("norm1", new LayerNorm(device, config.DModel, config.LayerNormEps));
        Norm2 = Child("norm2", new LayerNorm(device, config.DModel, config.LayerNormEps));
        Dropout1 = Child("dropout1", new Dropout(device, config.Dropout, dropoutStream));
        Dropout2 = Child("dropout2", new Dropout(device, config.Dropout, dropoutStream));
        Residual1 = Child("residual1", new Residual(device));
        Residual2 = Child("residual2", new Residual(device));
    }

    /// <summary>Pre-LN (each norm before its sub-layer) rather than the paper's post-LN.</summary>
    public bool NormFirst { get; }

    /// <summary><c>self_attn</c>.</summary>
    public SelfAttention SelfAttention { get; }

    /// <summary><c>linear1</c>, activation, dropout, <c>linear2</c>.</summary>
    public FeedForward FeedForward { get; }

    /// <summary><c>norm1</c> (after, or in pre-LN before, the self-attention).</summary>
    public LayerNorm Norm1 { get; }

    /// <summary><c>norm2</c> (around the feed-forward network).</summary>
    public LayerNorm Norm2 { get; }

    /// <summary><c>dropout1</c>, on the self-attention's output.</summary>
    public Dropout Dropout1 { get; }

    /// <summary><c>dropout2</c>, on the feed-forward network's output.</summary>
    public Dropout Dropout2 { get; }

    /// <summary>The residual sum around the self-attention.</summary>
    public Residual Residual1 { get; }

    /// <summary>The residual sum around the feed-forward network.</summary>
    public Residual Residual2 { get; }

    /// <summary>Learnable scalars of one layer.</summary>
    internal static long ParameterCount(LayerConfig config) =>
        MultiHeadAttention.ParameterCount(config.DModel) + FeedForward.ParameterCount(config.DModel, config.DimFeedforward) + (2 * LayerNorm.ParameterCount(config.DModel));

    /// <summary>Device bytes of its sub-layers' buffers after a step over [<paramref name="batch"/>, <paramref name="length"/>].</summary>
    internal static long ActivationBytes(LayerConfig config, int batch, int length, bool training, int unfusedAttentionMaxLength)
    {
        var (rows, e) = ((long)batch * length, config.DModel);
        var block = LayerNorm.ActivationBytes(rows, e, training) + Dropout.ActivationBytes(rows * e, config.Dropout, training) + Residual.ActivationBytes(rows, e, training);
        return SelfAttention.ActivationBytes(batch, length, e, config.Heads, training, unfusedAttentionMaxLength)
            + FeedForward.ActivationBytes(rows, e, config.DimFeedforward, config.Dropout, training)
            + (2 * block);
    }

    /// <summary>One layer. // x [B, T, E], keyPadding [B, T] → [B, T, E]</summary>
    public Tensor<float> Forward(Tensor<float> x, Tensor<int>? keyPadding = null) => Forward(x, keyPadding, cache: null, layer: 0);

    /// <summary>dx, accumulating every parameter gradient; mirrors the forward line by line. // dy [B, T, E] → dx [B, T, E]</summary>
    public Tensor<float> Backward(Tensor<float> dOutput)
    {
        if (NormFirst)
        {
            var dx = Residual2.Backward(dOutput, Norm2.Backward(FeedForward.Backward(Dropout2.Backward(dOutput))));
            return Residual1.Backward(dx, Norm1.Backward(SelfAttention.Backward(Dropout1.Backward(dx))));
        }
        else
        {
            var dSum = Norm2.Backward(dOutput);                                 // dSum: the gradient at the residual sum
            var dx = Residual2.Backward(dSum, FeedForward.Backward(Dropout2.Backward(dSum)));
            dSum = Norm1.Backward(dx);
            return Residual1.Backward(dSum, SelfAttention.Backward(Dropout1.Backward(dSum)));
        }
    }

    /// <summary>
    /// <see cref="Forward(Tensor{float}, Tensor{int})"/> for new positions only, attending over the
    /// cached ones (no backward). Pre-LN in evaluation mode (decoding) the two residual sums are
    /// the epilogues of out_proj and linear2, added into x in place: x is returned, changed.
    /// // x [B, Tn, E] → [B, Tn, E]
    /// </summary>
    internal Tensor<float> ForwardCached(Tensor<float> x, KeyValueCache cache, int layer, Tensor<int>? keyPadding)
    {
        if (!NormFirst || Training)
            return Forward(x, keyPadding, cache, layer);
        x = SelfAttention.ForwardCached(Norm1.Forward(x), cache.SelfKeyValues(layer), cache.Length, keyPadding, residual: x);   // x += self_attn(norm1(x))
        return FeedForward.ForwardAddInto(x, Norm2.Forward(x));                                                                 // x += FFN(norm2(x))
    }

    private Tensor<float> Forward(Tensor<float> x, Tensor<int>? keyPadding, KeyValueCache? cache, int layer)
    {
        if (NormFirst)
        {
            x = Residual1.Forward(x, Dropout1.Forward(SelfAttend(Norm1.Forward(x), keyPadding, cache, layer)));   // x + dropout1(self_attn(norm1(x)))
            return Residual2.Forward(x, Dropout2.Forward(FeedForward.Forward(Norm2.Forward(x))));                // x + dropout2(FFN(norm2(x)))
        }
        x = Norm1.Forward(Residual1.Forward(x, Dropout1.Forward(SelfAttend(x, keyPadding, cache, layer))));      // norm1(x + dropout1(self_attn(x)))
        return Norm2.Forward(Residual2.Forward(x, Dropout2.Forward(FeedForward.Forward(x))));                    // norm2(x + dropout2(FFN(x)))
    }

    /// <summary>self_attn over the whole sequence, or over the cached positions and the new ones.</summary>
    private Tensor<float> SelfAttend(Tensor<float> x, Tensor<int>? keyPadding, KeyValueCache? cache, int layer) => cache is null
        ? SelfAttention.Forward(x, keyPadding)
        : SelfAttention.ForwardCached(x, cache.SelfKeyValues(layer), cache.Length, keyPadding);
}
