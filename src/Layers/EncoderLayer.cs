using GpuTransformer.Kernels.Backends;

namespace GpuTransformer.Layers;

/// <summary>
/// PyTorch's <c>nn.TransformerEncoderLayer</c> (batch_first): self-attention then the
/// feed-forward network, each inside a residual connection with its norm and dropout.
/// Post-LN: x = norm1(x + dropout1(self_attn(x))), x = norm2(x + dropout2(FFN(x)));
/// pre-LN: x = x + dropout1(self_attn(norm1(x))), x = x + dropout2(FFN(norm2(x))).
/// State_dict names: <c>self_attn.*</c>, <c>linear1.*</c>, <c>linear2.*</c>, <c>norm1.*</c>, <c>norm2.*</c>.
/// A causal encoder layer is the decoder-only language model's block.
/// </summary>
public sealed class EncoderLayer : Module
{
    /// <summary>One layer; <paramref name="causal"/> masks later positions (the language model's block).</summary>
    public EncoderLayer(ComputeDevice device, LayerConfig config, bool causal, DropoutStream dropoutStream, ParameterInitializer init)
        : base(device)
    {
        ArgumentNullException.ThrowIfNull(config);
        SelfAttention = Child("self_attn", new MultiHeadAttention(device, config.DModel, config.Heads, causal, init));
        FeedForward = Child("", new FeedForward(device, config.DModel, config.DimFeedforward, config.Activation, config.Dropout, dropoutStream, init));
        Norm1 = Child("norm1", new LayerNorm(device, config.DModel, config.LayerNormEps));
        Norm2 = Child("norm2", new LayerNorm(device, config.DModel, config.LayerNormEps));
        AttentionBlock = Child("attention_block", new SublayerConnection(device, Norm1, config.NormFirst, config.Dropout, dropoutStream));
        FeedForwardBlock = Child("feed_forward_block", new SublayerConnection(device, Norm2, config.NormFirst, config.Dropout, dropoutStream));
    }

    /// <summary><c>self_attn</c>.</summary>
    public MultiHeadAttention SelfAttention { get; }

    /// <summary><c>linear1</c>, activation, dropout, <c>linear2</c>.</summary>
    public FeedForward FeedForward { get; }

    /// <summary><c>norm1</c> (after, or in pre-LN before, the self-attention).</summary>
    public LayerNorm Norm1 { get; }

    /// <summary><c>norm2</c> (around the feed-forward network).</summary>
    public LayerNorm Norm2 { get; }

    /// <summary>Residual, dropout1 and norm1 around the self-attention.</summary>
    public SublayerConnection AttentionBlock { get; }

    /// <summary>Residual, dropout2 and norm2 around the feed-forward network.</summary>
    public SublayerConnection FeedForwardBlock { get; }

    /// <summary>One layer. // x [B, T, E], keyPadding [B, T] → [B, T, E]</summary>
    public Tensor<float> Forward(Tensor<float> x, Tensor<int>? keyPadding = null)
    {
        x = AttentionBlock.Forward(x, SelfAttention.Forward(AttentionBlock.SublayerInput(x), keyPadding));
        x = FeedForwardBlock.Forward(x, FeedForward.Forward(FeedForwardBlock.SublayerInput(x)));
        return x;
    }

    /// <summary>dx, accumulating every parameter gradient. // dy [B, T, E] → dx [B, T, E]</summary>
    public Tensor<float> Backward(Tensor<float> dOutput)
    {
        var dx = FeedForwardBlock.Backward(FeedForward.Backward(FeedForwardBlock.BackwardToSublayer(dOutput)));
        dx = AttentionBlock.Backward(SelfAttention.Backward(AttentionBlock.BackwardToSublayer(dx)));
        return dx;
    }

    /// <summary>
    /// <see cref="Forward"/> for new positions only, attending over the cached ones (no backward).
    /// // x [B, Tn, E] → [B, Tn, E]
    /// </summary>
    internal Tensor<float> ForwardCached(Tensor<float> x, KeyValueCache cache, int layer, Tensor<int>? keyPadding)
    {
        var attended = SelfAttention.ForwardCached(AttentionBlock.SublayerInput(x), cache.SelfKeyValues(layer), cache.Length, keyPadding);
        x = AttentionBlock.Forward(x, attended);
        x = FeedForwardBlock.Forward(x, FeedForward.Forward(FeedForwardBlock.SublayerInput(x)));
        return x;
    }
}
