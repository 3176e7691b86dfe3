using GpuTransformer.Kernels.Backends;

namespace GpuTransformer.Layers;

/// <summary>
/// PyTorch's <c>nn.TransformerDecoderLayer</c> (batch_first): causal self-attention,
/// cross-attention over the encoder memory, then the feed-forward network, each inside a
/// residual connection with its norm and dropout. Post-LN (the paper):
/// x = norm1(x + dropout1(self_attn(x))), x = norm2(x + dropout2(multihead_attn(x, memory))),
/// x = norm3(x + dropout3(FFN(x))); pre-LN (norm_first): x = x + dropout1(self_attn(norm1(x))),
/// x = x + dropout2(multihead_attn(norm2(x), memory)), x = x + dropout3(FFN(norm3(x))).
/// State_dict names: <c>self_attn.*</c>, <c>multihead_attn.*</c>, <c>linear1.*</c>, <c>linear2.*</c>, <c>norm1…3.*</c>.
/// <para>Keeps for the backward: what its sub-layers keep.</para>
/// </summary>
public sealed class DecoderLayer : Module
{
    /// <summary>One decoder layer.</summary>
    public DecoderLayer(ComputeDevice device, LayerConfig config, DropoutStream dropoutStream, ParameterInitializer init)
        : base(device)
    {
        ArgumentNullException.ThrowIfNull(config);
        NormFirst = config.NormFirst;
        SelfAttention = Child("self_attn", new SelfAttention(device, config.DModel, config.Heads, causal: true, init));
        CrossAttention = Child("multihead_attn", new CrossAttention(device, config.DModel, config.Heads, init));
        FeedForward = Child("", new FeedForward(device, config.DModel, config.DimFeedforward, config.Activation, config.Dropout, dropoutStream, init));
        Norm1 = Child("norm1", new LayerNorm(device, config.DModel, config.LayerNormEps));
        Norm2 = Child("norm2", new LayerNorm(device, config.DModel, config.LayerNormEps));
        Norm3 = Child("norm3", new LayerNorm(device, config.DModel, config.LayerNormEps));
        Dropout1 = Child("dropout1", new Dropout(device, config.Dropout, dropoutStream));
        Dropout2 = Child("dropout2", new Dropout(device, config.Dropout, dropoutStream));
        Dropout3 = Child("dropout3", new Dropout(device, config.Dropout, dropoutStream));
        Residual1 = Child("residual1", new Residual(device));
        Residual2 = Child("residual2", new Residual(device));
        Residual3 = Child("residual3", new Residual(device));
    }

    /// <summary>Pre-LN (each norm before its sub-layer) rather than the paper's post-LN.</summary>
    public bool NormFirst { get; }

    /// <summary><c>self_attn</c>, causal.</summary>
    public SelfAttention SelfAttention { get; }

    /// <summary><c>multihead_attn</c>: queries from the decoder, keys and values from the memory.</summary>
    public CrossAttention CrossAttention { get; }

    /// <summary><c>linear1</c>, activation, dropout, <c>linear2</c>.</summary>
    public FeedForward FeedForward { get; }

    /// <summary><c>norm1</c> (self-attention).</summary>
    public LayerNorm Norm1 { get; }

    /// <summary><c>norm2</c> (cross-attention).</summary>
    public LayerNorm Norm2 { get; }

    /// <summary><c>norm3</c> (feed-forward).</summary>
    public LayerNorm Norm3 { get; }

    /// <summary><c>dropout1</c>, on the self-attention's output.</summary>
    public Dropout Dropout1 { get; }

    /// <summary><c>dropout2</c>, on the cross-attention's output.</summary>
    public Dropout Dropout2 { get; }

    /// <summary><c>dropout3</c>, on the feed-forward network's output.</summary>
    public Dropout Dropout3 { get; }

    /// <summary>The residual sum around the self-attention.</summary>
    public Residual Residual1 { get; }

    /// <summary>The residual sum around the cross-attention.</summary>
    public Residual Residual2 { get; }

    /// <summary>The residual sum around the feed-forward network.</summary>
    public Residual Residual3 { get; }

    /// <summary>Learnable scalars of one layer.</summary>
    internal static long ParameterCount(LayerConfig config) =>
        (2 * MultiHeadAttention.ParameterCount(config.DModel)) + FeedForward.ParameterCount(config.DModel, config.DimFeedforward) + (3 * LayerNorm.ParameterCount(config.DModel));

    /// <summary>Device bytes of its sub-layers' buffers after a step over target [<paramref name="batch"/>, <paramref name="length"/>] and memory [B, <paramref name="memoryLength"/>].</summary>
    internal static long ActivationBytes(LayerConfig config, int batch, int length, int memoryLength, bool training, int unfusedAttentionMaxLength)
    {
        var (rows, e) = ((long)batch * length, config.DModel);
        var block = LayerNorm.ActivationBytes(rows, e, training) + Dropout.ActivationBytes(rows * e, config.Dropout, training) + Residual.ActivationBytes(rows, e, training);
        return SelfAttention.ActivationBytes(batch, length, e, config.Heads, training, unfusedAttentionMaxLength)
            + CrossAttention.ActivationBytes(batch, length, memoryLength, e, config.Heads, training, unfusedAttentionMaxLength)
            + FeedForward.ActivationBytes(rows, e, config.DimFeedforward, config.Dropout, training)
            + (3 * block);
    }

    /// <summary>
    /// One layer. // x [B, T, E], memory [B, S, E], targetPadding [B, T], memoryPadding [B, S] → [B, T, E]
    /// </summary>
    public Tensor<float> Forward(Tensor<float> x, Tensor<float> memory, Tensor<int>? targetPadding = null, Tensor<int>? memoryPadding = null)
    {
        ArgumentNullException.ThrowIfNull(memory);
        return Forward(x, targetPadding, memory, memoryPadding, cache: null, layer: 0);
    }

    /// <summary>
    /// dx and this layer's share of dMemory, accumulating every parameter gradient; mirrors the
    /// forward line by line. // dy [B, T, E] → (dx [B, T, E], dMemory [B, S, E])
    /// </summary>
    public (Tensor<float> Input, Tensor<float> Memory) Backward(Tensor<float> dOutput)
    {
        if (NormFirst)
        {
            var dx = Residual3.Backward(dOutput, Norm3.Backward(FeedForward.Backward(Dropout3.Backward(dOutput))));
            var (dQuery, dMemory) = CrossAttention.Backward(Dropout2.Backward(dx));
            dx = Residual2.Backward(dx, Norm2.Backward(dQuery));
            return (Residual1.Backward(dx, Norm1.Backward(SelfAttention.Backward(Dropout1.Backward(dx)))), dMemory);
        }
        else
        {
            var dSum = Norm3.Backward(dOutput);                                 // dSum: the gradient at the residual sum
            var dx = Residual3.Backward(dSum, FeedForward.Backward(Dropout3.Backward(dSum)));
            dSum = Norm2.Backward(dx);
            var (dQuery, dMemory) = CrossAttention.Backward(Dropout2.Backward(dSum));
            dx = Residual2.Backward(dSum, dQuery);
            dSum = Norm1.Backward(dx);
            return (Residual1.Backward(dSum, SelfAttention.Backward(Dropout1.Backward(dSum))), dMemory);
        }
    }

    /// <summary>
    /// <see cref="Forward(Tensor{float}, Tensor{float}, Tensor{int}, Tensor{int})"/> for new target
    /// positions only, with the self-attention keys and values and the memory's projected keys
    /// and values from <paramref name="cache"/> (no backward). // x [B, Tn, E] → [B, Tn, E]
    /// </summary>
    internal Tensor<float> ForwardCached(Tensor<float> x, KeyValueCache cache, int layer, Tensor<int>? targetPadding) =>
        Forward(x, targetPadding, memory: null, cache.MemoryPadding, cache, layer);

    private Tensor<float> Forward(Tensor<float> x, Tensor<int>? targetPadding, Tensor<float>? memory, Tensor<int>? memoryPadding, KeyValueCache? cache, int layer)
    {
        if (NormFirst)
        {
            x = Residual1.Forward(x, Dropout1.Forward(SelfAttend(Norm1.Forward(x), targetPadding, cache, layer)));           // x + dropout1(self_attn(norm1(x)))
            x = Residual2.Forward(x, Dropout2.Forward(CrossAttend(Norm2.Forward(x), memory, memoryPadding, cache, layer))); // x + dropout2(multihead_attn(norm2(x), memory))
            return Residual3.Forward(x, Dropout3.Forward(FeedForward.Forward(Norm3.Forward(x))));                           // x + dropout3(FFN(norm3(x)))
        }
        x = Norm1.Forward(Residual1.Forward(x, Dropout1.Forward(SelfAttend(x, targetPadding, cache, layer))));              // norm1(x + dropout1(self_attn(x)))
        x = Norm2.Forward(Residual2.Forward(x, Dropout2.Forward(CrossAttend(x, memory, memoryPadding, cache, layer))));     // norm2(x + dropout2(multihead_attn(x, memory)))
        return Norm3.Forward(Residual3.Forward(x, Dropout3.Forward(FeedForward.Forward(x))));                               // norm3(x + dropout3(FFN(x)))
    }

    /// <summary>self_attn over the whole target, or over the cached positions and the new ones.</summary>
    private Tensor<float> SelfAttend(Tensor<float> x, Tensor<int>? targetPadding, KeyValueCache? cache, int layer) => cache is null
        ? SelfAttention.Forward(x, targetPadding)
        : SelfAttention.ForwardCached(x, cache.SelfKeyValues(layer), cache.Length, targetPadding);

    /// <summary>multihead_attn over the memory, or over its keys and values projected once into the cache.</summary>
    private Tensor<float> CrossAttend(Tensor<float> x, Tensor<float>? memory, Tensor<int>? memoryPadding, KeyValueCache? cache, int layer) => cache is null
        ? CrossAttention.Forward(x, memory!, memoryPadding)
        : CrossAttention.AttendMemory(x, cache.CrossKeyValues(layer), memoryPadding);
}
