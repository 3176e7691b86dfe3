using System.Globalization;
using GpuTransformer.Kernels;
using GpuTransformer.Kernels.Backends;

namespace GpuTransformer.Layers;

/// <summary>
/// A decoder-only (GPT-style) language model, <c>language_model</c> in
/// <c>scripts/parity/README.md</c>: token ids → E[ids]·√d_model + PE → dropout → N causal
/// blocks (PyTorch <c>nn.TransformerEncoderLayer</c>s run with a causal mask) → final norm →
/// logits x·Wᵀ with W = <c>lm_head.weight</c>, or the embedding table when tie_weights.
/// State_dict names: <c>tok_embed.weight</c>, <c>layers.{i}.*</c>, <c>norm.*</c>, <c>lm_head.weight</c>.
/// <para>
/// Keys equal to pad_id are masked (as the reference model does), unless a mask is given.
/// Initialisation follows the README's table from <c>seed</c>; dropout masks come from a
/// counter-based stream seeded with the same seed (<see cref="Model.RandomState"/>).
/// Activations live in buffers reused from step to step: after the first step with a given
/// [B, T] no device memory is allocated. The logits a forward returns stay valid until the next
/// forward or until <see cref="Model.Loss"/> replaces them by their gradient.
/// </para>
/// </summary>
public sealed class LanguageModel : Model
{
    private readonly EncoderLayer[] layers;
    private readonly Tensor<int> paddingBuffer;

    /// <summary>A model with freshly initialised weights (PyTorch's schemes, drawn from <paramref name="seed"/>).</summary>
    /// <exception cref="ArgumentException">The config is inconsistent (<see cref="LanguageModelConfig.Validate"/>).</exception>
    public LanguageModel(ComputeDevice device, LanguageModelConfig config, int seed = 0)
        : base(device, seed)
    {
        ArgumentNullException.ThrowIfNull(config);
        Config = config.Validate();
        var layer = LayerConfig.From(config);
        var init = new ParameterInitializer(seed);
        var e = config.DModel;

        TokenEmbedding = Child("tok_embed", new Embedding(device, config.VocabularySize, e, config.ScaleEmbeddings ? MathF.Sqrt(e) : 1f, init, initStd: config.EmbeddingInitStd));
        Positions = Child("positions", new PositionalEncoding(device, e, config.MaxSequenceLength));
        EmbeddingDropout = Child("dropout", new Dropout(device, config.Dropout, DropoutStream));
        layers = new EncoderLayer[config.NumLayers];
        for (var i = 0; i < layers.Length; i++)
            layers[i] = Child(string.Create(CultureInfo.InvariantCulture, $"layers.{i}"), new EncoderLayer(device, layer, causal: true, DropoutStream, init));
        Norm = Child("norm", new LayerNorm(device, e, config.LayerNormEps));
        OutputProjection = Child("lm_head", new Linear(device, e, config.VocabularySize, bias: false, init, config.TieWeights ? TokenEmbedding.Weight : null));
        LossFunction = Child("loss", new CrossEntropyLoss(device, config.PadId >= 0 ? config.PadId : Kernels.CrossEntropyOptions.DefaultIgnoreIndex));
        paddingBuffer = Buffer<int>(1);
        PackParameters(); // one value and one gradient buffer: a launch or two per optimizer step
    }

    /// <summary>The (validated) configuration.</summary>
    public override LanguageModelConfig Config { get; }

    /// <summary><c>tok_embed</c>: E [V, E], scaled by √d_model when scale_embeddings.</summary>
    public Embedding TokenEmbedding { get; }

    /// <summary>The sinusoidal positions added to the embeddings.</summary>
    public PositionalEncoding Positions { get; }

    /// <summary>Dropout on embeddings + positions.</summary>
    public Dropout EmbeddingDropout { get; }

    /// <summary><c>layers.{i}</c>: causal self-attention blocks.</summary>
    public IReadOnlyList<EncoderLayer> Layers => layers;

    /// <summary>The final LayerNorm.</summary>
    public LayerNorm Norm { get; }

    /// <summary><c>lm_head</c>: the projection to vocabulary logits (no bias; the embedding table when tied).</summary>
    public override Linear OutputProjection { get; }

    /// <summary>Cross-entropy ignoring pad_id; set its <see cref="CrossEntropyLoss.LabelSmoothing"/> here.</summary>
    public override CrossEntropyLoss LossFunction { get; }

    /// <summary>Learnable scalars of a model of <paramref name="config"/>, without building it.</summary>
    internal static long ParameterCount(LanguageModelConfig config) =>
        Embedding.ParameterCount(config.VocabularySize, config.DModel)
        + (config.NumLayers * EncoderLayer.ParameterCount(LayerConfig.From(config)))
        + LayerNorm.ParameterCount(config.DModel)
        + Linear.ParameterCount(config.DModel, config.VocabularySize, bias: false, sharedWeight: config.TieWeights);

    /// <summary>
    /// Device bytes of the buffers a step over [<paramref name="batch"/>, <paramref name="length"/>]
    /// leaves in the model, each layer's by its own count, with a key padding mask.
    /// </summary>
    internal static long ActivationBytes(LanguageModelConfig config, int batch, int length, bool training, int unfusedAttentionMaxLength)
    {
        var (rows, e) = ((long)batch * length, config.DModel);
        return Embedding.ActivationBytes(rows, e) + Dropout.ActivationBytes(rows * e, config.Dropout, training)
            + (config.NumLayers * EncoderLayer.ActivationBytes(LayerConfig.From(config), batch, length, training, unfusedAttentionMaxLength))
            + LayerNorm.ActivationBytes(rows, e, training)
            + Linear.ActivationBytes(rows, e, config.VocabularySize, training)
            + CrossEntropyLoss.ActivationBytes(rows)
            + (sizeof(int) * rows);                                        // key padding [B, T]
    }

    /// <summary>
    /// Device bytes a step holds outside the model's buffers: the embedding's token buckets and
    /// the column-sum scratch of the widest bias gradient (in_proj 3E or linear1 d_ff).
    /// </summary>
    internal static long ScratchBytes(LanguageModelConfig config, int batch, int length)
    {
        var rows = batch * length;
        return Embedding.ScratchBytes(rows)
            + (sizeof(float) * (long)ReductionKernels.ColumnSumsScratchLength(rows, Math.Max(3 * config.DModel, config.DimFeedforward)));
    }

    /// <summary>
    /// Logits for every position. // ids [B, T] → logits [B, T, V]
    /// </summary>
    /// <param name="ids">Token ids, T ≤ max_seq_len.</param>
    /// <param name="keyPadding">Optional [B, T] mask (nonzero = padded key); by default keys whose id is pad_id.</param>
    /// <exception cref="ArgumentException">An id is outside the vocabulary, T exceeds max_seq_len, or the mask has another shape (before any launch).</exception>
    public Tensor<float> Forward(TokenIds ids, ReadOnlyMemory<int> keyPadding = default)
    {
        var padding = KeyPadding.Upload(paddingBuffer, CheckIds(ids, keyPadding), ids);

        Tensor<float> x;
        using (Device.InLayer("tok_embed + positions"))                    // (profiler labels; no-ops otherwise)
        {
            x = TokenEmbedding.Forward(ids, Positions);                    // E[ids]·√d + PE (one pass)  [B, T, E]
            x = EmbeddingDropout.Forward(x);                               // dropout
        }
        for (var i = 0; i < layers.Length; i++)
        {
            using var layer = Device.InLayer("layers", i);
            x = layers[i].Forward(x, padding);                             // N causal blocks
        }
        using var head = Device.InLayer("norm + lm_head");
        return OutputProjection.Forward(Norm.Forward(x));                  // logits      [B, T, V]
    }

    /// <summary>Backward of <see cref="Forward(TokenIds, ReadOnlyMemory{int})"/>: accumulates every parameter's gradient. // dLogits [B, T, V]</summary>
    public override void Backward(Tensor<float> dLogits)
    {
        Tensor<float> dx;
        using (Device.InLayer("norm + lm_head"))
            dx = Norm.Backward(OutputProjection.Backward(dLogits));        // [B, T, E]
        for (var i = layers.Length - 1; i >= 0; i--)
        {
            using var layer = Device.InLayer("layers", i);
            dx = layers[i].Backward(dx);
        }
        using var embedding = Device.InLayer("tok_embed + positions");
        TokenEmbedding.Backward(Positions.Backward(EmbeddingDropout.Backward(dx)));
    }

    /// <summary><see cref="Forward(TokenIds, ReadOnlyMemory{int})"/> of the batch's ids and padding. // → logits [B, T, V]</summary>
    public override Tensor<float> Forward(ModelBatch batch)
    {
        RequireNoSource(batch);
        return Forward(batch.Inputs, batch.InputPadding);
    }

    /// <summary>Checks the ids and their mask (as <see cref="Forward(TokenIds, ReadOnlyMemory{int})"/> does), then the targets: same shape, in the vocabulary or pad_id.</summary>
    public override void Validate(ModelBatch batch)
    {
        RequireNoSource(batch);
        CheckIds(batch.Inputs, batch.InputPadding);
        batch.Inputs.RequireSameShape(batch.Targets, "ids", "targets");
        batch.Targets.RequireInVocabulary(Config.VocabularySize, "targets", LossFunction.IgnoreIndex);
    }

    // ------------------------------------------------------------------ generation

    /// <summary>An empty key/value cache for <paramref name="batch"/> sequences of up to <paramref name="maxLength"/> positions.</summary>
    public KeyValueCache CreateCache(int batch, int maxLength)
    {
        if (maxLength > Config.MaxSequenceLength)
            throw new ArgumentException($"A cache of {maxLength} positions exceeds max_seq_len {Config.MaxSequenceLength}.", nameof(maxLength));
        return new KeyValueCache(Device, layers.Length, batch, maxLength, Config.DModel);
    }

    /// <summary>
    /// Logits for new tokens only, attending over the positions in <paramref name="cache"/>, whose
    /// keys and values are extended by the new ones. Token by token this gives the logits of
    /// <see cref="Forward(TokenIds, ReadOnlyMemory{int})"/> on the whole sequence. No backward. // ids [B, Tn] → logits [B, Tn, V]
    /// </summary>
    /// <exception cref="ArgumentException">Bad ids, a batch that is not the cache's, or positions beyond the cache or max_seq_len.</exception>
    public Tensor<float> ForwardIncremental(TokenIds ids, KeyValueCache cache, ReadOnlyMemory<int> keyPadding = default)
    {
        ArgumentNullException.ThrowIfNull(ids);
        ArgumentNullException.ThrowIfNull(cache);
        RequireCache(cache);
        var mask = KeyPadding.Host(ids, Config.PadId, keyPadding, nameof(keyPadding));
        ids.RequireInVocabulary(Config.VocabularySize, nameof(ids));
        var padding = cache.Reserve(ids.Batch, ids.Length, mask);

        Tensor<float> x;
        using (Device.InLayer("tok_embed + positions"))
        {
            x = TokenEmbedding.Forward(ids, Positions, cache.Length);      // + PE at positions Length … Length + Tn − 1  [B, Tn, E]
            x = EmbeddingDropout.Forward(x);
        }
        for (var i = 0; i < layers.Length; i++)
        {
            using var layer = Device.InLayer("layers", i);
            x = layers[i].ForwardCached(x, cache, i, padding);
        }
        cache.Advance(ids.Length);
        using var head = Device.InLayer("norm + lm_head");
        return OutputProjection.Forward(Norm.Forward(x));                  // [B, Tn, V]
    }

    private void RequireCache(KeyValueCache cache)
    {
        if (cache.LayerCount != layers.Length || cache.DModel != Config.DModel)
            throw new ArgumentException($"The cache has {cache.LayerCount} layers of width {cache.DModel}; this model has {layers.Length} of width {Config.DModel}.", nameof(cache));
    }

    /// <summary>The host key-padding mask of <paramref name="ids"/> after checking them: length, mask shape, vocabulary (empty: no key padded).</summary>
    private int[] CheckIds(TokenIds ids, ReadOnlyMemory<int> keyPadding) =>
        KeyPadding.Checked(ids, nameof(ids), Config.MaxSequenceLength, Config.VocabularySize, Config.PadId, keyPadding, nameof(keyPadding));

    private static void RequireNoSource(ModelBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        if (batch.Source is not null)
            throw new ArgumentException($"The batch has a source {batch.Source}, but a decoder-only language model reads none.", nameof(batch));
    }
}
