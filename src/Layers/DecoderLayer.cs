using GpuTransformer.Kernels.Backends;

namespace GpuTransformer.Layers;

/// <summary>
/// PyTorch's <c>nn.TransformerDecoderLayer</c> (batch_first): causal self-attention,
/// cross-attention over the encoder memory, then the feed-forward network, each inside a
/// residual connection with its norm and dropout. Post-LN:
/// x = norm1(x + dropout1(self_attn(x))), x = norm2(x + dropout2(multihead_attn(x, memory))),
/// x = norm3(x + dropout3(FFN(x))); pre-LN applies each norm to the sub-layer's input instead.
/// State_dict names: <c>self_attn.*</c>, <c>multihead_attn.*</c>, <c>linear1.*</c>, <c>linear2.*</c>, <c>norm1…3.*</c>.
/// </summary>
public sealed class DecoderLayer : Module
{
    /// <summary>One decoder layer.</summary>
    public DecoderLayer(ComputeDevice device, LayerConfig config, DropoutStream dropoutStream, ParameterInitializer init)
        : base(device)
    {
        ArgumentNullException.ThrowIfNull(config);
        SelfAttention = Child("self_attn", new MultiHeadAttention(device, config.DModel, config.Heads, causal: true, init));
        CrossAttention = Child("multihead_attn", new MultiHeadAttention(device, config.DModel, config.Heads, causal: false, init));
        FeedForward = Child("", new FeedForward(device, config.DModel, config.DimFeedforward, config.Activation, config.Dropout, dropoutStream, init));
        Norm1 = Child("norm1", new LayerNorm(device, config.DModel, config.LayerNormEps));
        Norm2 = Child("norm2", new LayerNorm(device, config.DModel, config.LayerNormEps));
        Norm3 = Child("norm3", new LayerNorm(device, config.DModel, config.LayerNormEps));
        SelfAttentionBlock = Child("self_attention_block", new SublayerConnection(device, Norm1, config.NormFirst, config.Dropout, dropoutStream));
        CrossAttentionBlock = Child("cross_attention_block", new SublayerConnection(device, Norm2, config.NormFirst, config.Dropout, dropoutStream));
        FeedForwardBlock = Child("feed_forward_block", new SublayerConnection(device, Norm3, config.NormFirst, config.Dropout, dropoutStream));
    }

    /// <summary><c>self_attn</c>, causal.</summary>
    public MultiHeadAttention SelfAttention { get; }

    /// <summary><c>multihead_attn</c>: queries from the decoder, keys and values from the memory.</summary>
    public MultiHeadAttention CrossAttention { get; }

    /// <summary><c>linear1</c>, activation, dropout, <c>linear2</c>.</summary>
    public FeedForward FeedForward { get; }

    /// <summary><c>norm1</c> (self-attention).</summary>
    public LayerNorm Norm1 { get; }

    /// <summary><c>norm2</c> (cross-attention).</summary>
    public LayerNorm Norm2 { get; }

    /// <summary><c>norm3</c> (feed-forward).</summary>
    public LayerNorm Norm3 { get; }

    /// <summary>Residual, dropout1 and norm1 around the self-attention.</summary>
    public SublayerConnection SelfAttentionBlock { get; }

    /// <summary>Residual, dropout2 and norm2 around the cross-attention.</summary>
    public SublayerConnection CrossAttentionBlock { get; }

    /// <summary>Residual, dropout3 and norm3 around the feed-forward network.</summary>
    public SublayerConnection FeedForwardBlock { get; }

    /// <summary>
    /// One layer. // x [B, T, E], memory [B, S, E], targetPadding [B, T], memoryPadding [B, S] → [B, T, E]
    /// </summary>
    public Tensor<float> Forward(Tensor<float> x, Tensor<float> memory, Tensor<int>? targetPadding = null, Tensor<int>? memoryPadding = null)
    {
        x = SelfAttentionBlock.Forward(x, SelfAttention.Forward(SelfAttentionBlock.SublayerInput(x), targetPadding));
        x = CrossAttentionBlock.Forward(x, CrossAttention.Forward(CrossAttentionBlock.SublayerInput(x), memory, memoryPadding));
        x = FeedForwardBlock.Forward(x, FeedForward.Forward(FeedForwardBlock.SublayerInput(x)));
        return x;
    }

    /// <summary>
    /// dx and this layer's share of dMemory, accumulating every parameter gradient.
    /// // dy [B, T, E] → (dx [B, T, E], dMemory [B, S, E])
    /// </summary>
    public (Tensor<float> Input, Tensor<float> Memory) Backward(Tensor<float> dOutput)
    {
        var dx = FeedForwardBlock.Backward(FeedForward.Backward(FeedForwardBlock.BackwardToSublayer(dOutput)));
        var (dQuery, dMemory) = CrossAttention.BackwardCross(CrossAttentionBlock.BackwardToSublayer(dx));
        dx = CrossAttentionBlock.Backward(dQuery);
        dx = SelfAttentionBlock.Backward(SelfAttention.Backward(SelfAttentionBlock.BackwardToSublayer(dx)));
        return (dx, dMemory);
    }

    /// <summary>
    /// <see cref="Forward"/> for new target positions only, with the self-attention keys and values
    /// and the memory's projected keys and values from <paramref name="cache"/> (no backward).
    /// // x [B, Tn, E] → [B, Tn, E]
    /// </summary>
    internal Tensor<float> ForwardCached(Tensor<float> x, KeyValueCache cache, int layer, Tensor<int>? targetPadding)
    {
        var attended = SelfAttention.ForwardCached(SelfAttentionBlock.SublayerInput(x), cache.SelfKeyValues(layer), cache.Length, targetPadding);
        x = SelfAttentionBlock.Forward(x, attended);
        x = CrossAttentionBlock.Forward(x, CrossAttention.AttendMemory(CrossAttentionBlock.SublayerInput(x), cache.CrossKeyValues(layer), cache.MemoryPadding));
        x = FeedForwardBlock.Forward(x, FeedForward.Forward(FeedForwardBlock.SublayerInput(x)));
        return x;
    }
}
