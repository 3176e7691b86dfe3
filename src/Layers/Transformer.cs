using GpuTransformer.Kernels;
using GpuTransformer.Kernels.Backends;

namespace GpuTransformer.Layers;

/// <summary>
/// The encoder–decoder Transformer of "Attention Is All You Need", <c>transformer</c> in
/// <c>scripts/parity/README.md</c>: source ids → E_src[ids]·√d_model + PE → dropout → encoder
/// (N × self-attention, feed-forward; final norm) = memory; target ids → E_tgt[ids]·√d_model + PE
/// → dropout → decoder (N × causal self-attention, cross-attention over the memory,
/// feed-forward; final norm) → logits = y·Wᵀ + b (<c>generator</c>).
/// <para>
/// State_dict names: <c>src_embed.weight</c>, <c>tgt_embed.weight</c>, <c>encoder.*</c> and
/// <c>decoder.*</c> exactly as <c>nn.Transformer</c>'s, <c>generator.weight</c>, <c>generator.bias</c>.
/// With share_embeddings one table, <c>src_embed.weight</c>, embeds source and target tokens and
/// is the generator's weight (unscaled); then there is no <c>tgt_embed.weight</c> and no
/// <c>generator.weight</c>, and the generator keeps its bias. Initialisation as PyTorch:
/// embeddings N(0, 1); every ≥ 2-D encoder and decoder parameter xavier_uniform (as
/// nn.Transformer re-initialises them); attention biases 0; other biases U(±1/√fan_in);
/// generator weight kaiming_uniform(a=√5); norms 1/0.
/// </para>
/// <para>
/// Source keys equal to pad_id are masked in the encoder's self-attention and in every
/// cross-attention, target keys equal to pad_id in the decoder's self-attention (unless masks
/// are given). Buffers are reused from step to step (no device allocation after the first step
/// with given shapes).
/// </para>
/// </summary>
public sealed class Transformer : Model
{
    private readonly Tensor<int> sourcePaddingBuffer;
    private readonly Tensor<int> targetPaddingBuffer;
    private Tensor<float>? memory;
    private Tensor<int>? sourcePadding;

    /// <summary>A model with freshly initialised weights (PyTorch's schemes, drawn from <paramref name="seed"/>).</summary>
    /// <exception cref="ArgumentException">The config is inconsistent (<see cref="TransformerConfig.Validate"/>).</exception>
    public Transformer(ComputeDevice device, TransformerConfig config, int seed = 0)
        : base(device, seed)
    {
        ArgumentNullException.ThrowIfNull(config);
        Config = config.Validate();
        var layer = LayerConfig.From(config);
        var init = new ParameterInitializer(seed);
        var e = config.DModel;
        var scale = config.ScaleEmbeddings ? MathF.Sqrt(e) : 1f;

        SourceEmbedding = Child("src_embed", new Embedding(device, config.SourceVocabularySize, e, scale, init));
        TargetEmbedding = Child("tgt_embed", new Embedding(device, config.TargetVocabularySize, e, scale, init, config.ShareEmbeddings ? SourceEmbedding.Weight : null));
        SourcePositions = Child("src_positions", new PositionalEncoding(device, e, config.MaxSequenceLength));
        TargetPositions = Child("tgt_positions", new PositionalEncoding(device, e, config.MaxSequenceLength));
        SourceDropout = Child("src_dropout", new Dropout(device, config.Dropout, DropoutStream));
        TargetDropout = Child("tgt_dropout", new Dropout(device, config.Dropout, DropoutStream));
        Encoder = Child("encoder", new Encoder(device, layer, config.NumEncoderLayers, DropoutStream, init));
        Decoder = Child("decoder", new Decoder(device, layer, config.NumDecoderLayers, DropoutStream, init));
        foreach (var parameter in Encoder.Parameters().Concat(Decoder.Parameters()))
        {
            if (parameter.Shape.Count > 1)
                init.XavierUniform(parameter);
        }
        OutputProjection = Child("generator", new Linear(device, e, config.TargetVocabularySize, bias: true, init, config.ShareEmbeddings ? SourceEmbedding.Weight : null));
        LossFunction = Child("loss", new CrossEntropyLoss(device, config.PadId >= 0 ? config.PadId : Kernels.CrossEntropyOptions.DefaultIgnoreIndex));
        sourcePaddingBuffer = Buffer<int>(1);
        targetPaddingBuffer = Buffer<int>(1);
        PackParameters(); // one value and one gradient buffer: a launch or two per optimizer step
    }

    /// <summary>The (validated) configuration.</summary>
    public override TransformerConfig Config { get; }

    /// <summary><c>src_embed</c>: the source table [V_src, E] (also the target table and generator weight when shared).</summary>
    public Embedding SourceEmbedding { get; }

    /// <summary><c>tgt_embed</c>: the target table [V_tgt, E], or the source table when shared.</summary>
    public Embedding TargetEmbedding { get; }

    /// <summary>Positions added to the source embeddings.</summary>
    public PositionalEncoding SourcePositions { get; }

    /// <summary>Positions added to the target embeddings.</summary>
    public PositionalEncoding TargetPositions { get; }

    /// <summary>Dropout on source embeddings + positions.</summary>
    public Dropout SourceDropout { get; }

    /// <summary>Dropout on target embeddings + positions.</summary>
    public Dropout TargetDropout { get; }

    /// <summary><c>encoder</c>: the encoder layers and final norm.</summary>
    public Encoder Encoder { get; }

    /// <summary><c>decoder</c>: the decoder layers and final norm.</summary>
    public Decoder Decoder { get; }

    /// <summary><c>generator</c> (the name of PyTorch's translation tutorial): the projection to target-vocabulary logits (weight tied to the table when shared).</summary>
    public override Linear OutputProjection { get; }

    /// <summary>Cross-entropy ignoring pad_id; set its <see cref="CrossEntropyLoss.LabelSmoothing"/> here (the paper uses 0.1).</summary>
    public override CrossEntropyLoss LossFunction { get; }

    /// <summary>Learnable scalars of a model of <paramref name="config"/>, without building it.</summary>
    internal static long ParameterCount(TransformerConfig config)
    {
        var (e, layer) = (config.DModel, LayerConfig.From(config));
        return Embedding.ParameterCount(config.SourceVocabularySize, e)
            + (config.ShareEmbeddings ? 0 : Embedding.ParameterCount(config.TargetVocabularySize, e))
            + Encoder.ParameterCount(layer, config.NumEncoderLayers)
            + Decoder.ParameterCount(layer, config.NumDecoderLayers)
            + Linear.ParameterCount(e, config.TargetVocabularySize, bias: true, sharedWeight: config.ShareEmbeddings);
    }

    /// <summary>
    /// Device bytes of the buffers a step over source [<paramref name="batch"/>, <paramref name="sourceLength"/>]
    /// and target [B, <paramref name="targetLength"/>] leaves in the model, each layer's by its own count, with key padding masks.
    /// </summary>
    internal static long ActivationBytes(TransformerConfig config, int batch, int sourceLength, int targetLength, bool training, int unfusedAttentionMaxLength)
    {
        var (e, layer) = (config.DModel, LayerConfig.From(config));
        var (sourceRows, targetRows) = ((long)batch * sourceLength, (long)batch * targetLength);
        return Embedding.ActivationBytes(sourceRows, e) + Dropout.ActivationBytes(sourceRows * e, config.Dropout, training)
            + Encoder.ActivationBytes(layer, config.NumEncoderLayers, batch, sourceLength, training, unfusedAttentionMaxLength)
            + Embedding.ActivationBytes(targetRows, e) + Dropout.ActivationBytes(targetRows * e, config.Dropout, training)
            + Decoder.ActivationBytes(layer, config.NumDecoderLayers, batch, targetLength, sourceLength, training, unfusedAttentionMaxLength)
            + Linear.ActivationBytes(targetRows, e, config.TargetVocabularySize, training)
            + CrossEntropyLoss.ActivationBytes(targetRows)
            + (sizeof(int) * (sourceRows + targetRows));                  // key padding [B, S] and [B, T]
    }

    /// <summary>
    /// Device bytes a step holds outside the model's buffers: both embeddings' token buckets and
    /// the column-sum scratch of the widest bias gradient (target rows: in_proj 3E, linear1 d_ff or
    /// the generator's V_tgt; source rows: 3E or d_ff).
    /// </summary>
    internal static long ScratchBytes(TransformerConfig config, int batch, int sourceLength, int targetLength)
    {
        var (sourceRows, targetRows) = (batch * sourceLength, batch * targetLength);
        var widest = Math.Max(3 * config.DModel, config.DimFeedforward);
        var columnSums = Math.Max(
            ReductionKernels.ColumnSumsScratchLength(targetRows, Math.Max(widest, config.TargetVocabularySize)),
            ReductionKernels.ColumnSumsScratchLength(sourceRows, widest));
        return Embedding.ScratchBytes(sourceRows) + Embedding.ScratchBytes(targetRows) + (sizeof(float) * (long)columnSums);
    }

    /// <summary>
    /// Teacher-forced logits: encodes the source and decodes the target input.
    /// // source [B, S], targetInput [B, T] → logits [B, T, V_tgt]
    /// </summary>
    /// <param name="source">Source ids [B, S].</param>
    /// <param name="targetInput">Target ids shifted right [B, T] (starting with bos).</param>
    /// <param name="sourcePadding">Optional [B, S] mask (nonzero = padded); by default source ids equal to pad_id.</param>
    /// <param name="targetPadding">Optional [B, T] mask; by default target ids equal to pad_id.</param>
    /// <exception cref="ArgumentException">Ids outside a vocabulary, sequences longer than max_seq_len, different batch sizes, or masks of other shapes (all before any launch).</exception>
    public Tensor<float> Forward(TokenIds source, TokenIds targetInput, ReadOnlyMemory<int> sourcePadding = default, ReadOnlyMemory<int> targetPadding = default)
    {
        var sourceMask = CheckSource(source, sourcePadding);
        var targetMask = CheckTarget(targetInput, targetPadding, source.Batch);
        EncodeChecked(source, sourceMask);
        return DecodeChecked(targetInput, targetMask);
    }

    /// <summary>memory = encoder(dropout(E_src[source]·√d + PE)). // source [B, S] → memory [B, S, E]</summary>
    public Tensor<float> Encode(TokenIds source, ReadOnlyMemory<int> sourcePadding = default) =>
        EncodeChecked(source, CheckSource(source, sourcePadding));

    /// <summary>
    /// Logits for a target input against the memory of the last <see cref="Encode"/>.
    /// // targetInput [B, T] → logits [B, T, V_tgt]
    /// </summary>
    public Tensor<float> Decode(TokenIds targetInput, ReadOnlyMemory<int> targetPadding = default)
    {
        var encoded = memory ?? throw new InvalidOperationException("Decode needs Encode first.");
        return DecodeChecked(targetInput, CheckTarget(targetInput, targetPadding, encoded.Dim(0)));
    }

    /// <summary>Backward of <see cref="Forward(TokenIds, TokenIds, ReadOnlyMemory{int}, ReadOnlyMemory{int})"/> (or of Encode + Decode): accumulates every parameter's gradient. // dLogits [B, T, V_tgt]</summary>
    public override void Backward(Tensor<float> dLogits)
    {
        var (dy, dMemory) = Decoder.Backward(OutputProjection.Backward(dLogits)); // [B, T, E], [B, S, E]
        TargetEmbedding.Backward(TargetPositions.Backward(TargetDropout.Backward(dy)));
        var dx = Encoder.Backward(dMemory);                                       // [B, S, E]
        SourceEmbedding.Backward(SourcePositions.Backward(SourceDropout.Backward(dx)));
    }

    /// <summary>The batch's source encoded and its target input decoded. // → logits [B, T, V_tgt]</summary>
    public override Tensor<float> Forward(ModelBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        return Forward(RequireSource(batch), batch.Inputs, batch.SourcePadding, batch.InputPadding);
    }

    /// <summary>Checks source, target input and their masks (as the forward does), then the target output: the target input's shape, in the vocabulary or pad_id.</summary>
    public override void Validate(ModelBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        var source = RequireSource(batch);
        CheckSource(source, batch.SourcePadding);
        CheckTarget(batch.Inputs, batch.InputPadding, source.Batch);
        batch.Inputs.RequireSameShape(batch.Targets, "targetInput", "targetOutput");
        batch.Targets.RequireInVocabulary(Config.TargetVocabularySize, "targetOutput", LossFunction.IgnoreIndex);
    }

    // ------------------------------------------------------------------ generation

    /// <summary>
    /// Encodes <paramref name="source"/> and returns a cache holding every decoder layer's
    /// cross-attention keys and values (projected once) for up to <paramref name="maxTargetLength"/>
    /// target positions; then call <see cref="DecodeIncremental"/> per step.
    /// </summary>
    public KeyValueCache StartDecoding(TokenIds source, int maxTargetLength, ReadOnlyMemory<int> sourcePadding = default)
    {
        if (maxTargetLength > Config.MaxSequenceLength)
            throw new ArgumentException($"{maxTargetLength} target positions exceed max_seq_len {Config.MaxSequenceLength}.", nameof(maxTargetLength));
        var encoded = Encode(source, sourcePadding);
        var cache = new KeyValueCache(Device, Decoder.Layers.Count, source.Batch, maxTargetLength, Config.DModel, memoryLength: source.Length);
        for (var i = 0; i < Decoder.Layers.Count; i++)
            Decoder.Layers[i].CrossAttention.ProjectMemory(encoded, cache.CrossKeyValues(i));
        if (this.sourcePadding is { } mask)
        {
            cache.MemoryPadding = new Tensor<int>(Device, source.Batch, source.Length);
            cache.MemoryPadding.CopyFrom(mask);
        }
        return cache;
    }

    /// <summary>
    /// Logits for new target tokens only, attending over the cached target positions and the
    /// cached memory. Token by token this gives the logits of <see cref="Decode"/> on the whole
    /// target. No backward. // targetTokens [B, Tn] → logits [B, Tn, V_tgt]
    /// </summary>
    public Tensor<float> DecodeIncremental(TokenIds targetTokens, KeyValueCache cache, ReadOnlyMemory<int> targetPadding = default)
    {
        ArgumentNullException.ThrowIfNull(targetTokens);
        ArgumentNullException.ThrowIfNull(cache);
        if (cache.LayerCount != Decoder.Layers.Count || cache.DModel != Config.DModel || cache.MemoryLength == 0)
            throw new ArgumentException("The cache was not made by this model's StartDecoding.", nameof(cache));
        var mask = KeyPadding.Host(targetTokens, Config.PadId, targetPadding, nameof(targetPadding));
        targetTokens.RequireInVocabulary(Config.TargetVocabularySize, nameof(targetTokens));
        var padding = cache.Reserve(targetTokens.Batch, targetTokens.Length, mask);

        var y = TargetEmbedding.Forward(targetTokens, TargetPositions, cache.Length, nameof(targetTokens)); // + PE at Length …  [B, Tn, E]
        y = TargetDropout.Forward(y);
        y = Decoder.ForwardCached(y, cache, padding);
        cache.Advance(targetTokens.Length);
        return OutputProjection.Forward(y);                                       // [B, Tn, V_tgt]
    }

    // ------------------------------------------------------------------ steps and checks

    private Tensor<float> EncodeChecked(TokenIds source, int[] sourceMask)
    {
        sourcePadding = KeyPadding.Upload(sourcePaddingBuffer, sourceMask, source);
        var x = SourceEmbedding.Forward(source, SourcePositions, 0, nameof(source)); // E[src]·√d + PE (one pass)  [B, S, E]
        x = SourceDropout.Forward(x);                                             // dropout
        memory = Encoder.Forward(x, sourcePadding);                               // memory      [B, S, E]
        return memory;
    }

    private Tensor<float> DecodeChecked(TokenIds targetInput, int[] targetMask)
    {
        var targetPadding = KeyPadding.Upload(targetPaddingBuffer, targetMask, targetInput);
        var y = TargetEmbedding.Forward(targetInput, TargetPositions, 0, nameof(targetInput)); // E[tgt]·√d + PE (one pass)  [B, T, E]
        y = TargetDropout.Forward(y);                                             // dropout
        y = Decoder.Forward(y, memory!, targetPadding, sourcePadding);            // [B, T, E]
        return OutputProjection.Forward(y);                                       // logits      [B, T, V_tgt]
    }

    private int[] CheckSource(TokenIds source, ReadOnlyMemory<int> sourcePadding) =>
        KeyPadding.Checked(source, nameof(source), Config.MaxSequenceLength, Config.SourceVocabularySize, Config.PadId, sourcePadding, nameof(sourcePadding));

    private int[] CheckTarget(TokenIds targetInput, ReadOnlyMemory<int> targetPadding, int sourceBatch)
    {
        ArgumentNullException.ThrowIfNull(targetInput);
        if (targetInput.Batch != sourceBatch)
            throw new ArgumentException($"targetInput has shape {targetInput} but the source has {sourceBatch} sequences; the batch sizes must match.", nameof(targetInput));
        return KeyPadding.Checked(targetInput, nameof(targetInput), Config.MaxSequenceLength, Config.TargetVocabularySize, Config.PadId, targetPadding, nameof(targetPadding));
    }

    private static TokenIds RequireSource(ModelBatch batch) =>
        batch.Source ?? throw new ArgumentException("The batch has no source: an encoder–decoder batch needs ModelBatch.Source [B, S].", nameof(batch));
}
