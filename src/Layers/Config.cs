using System.Text.Json;
using System.Text.Json.Serialization;
using GpuTransformer.Kernels;
using GpuTransformer.Kernels.Backends;

namespace GpuTransformer.Layers;

/// <summary>
/// A model's configuration as a state dict stores it (<see cref="StateDict.ModelKey"/> and
/// <see cref="StateDict.ConfigKey"/>), and the model it describes: the one place a kind of model
/// is tied to its class (<see cref="StateDict.ReadConfig"/> reads either, <see cref="CreateModel"/>
/// builds it).
/// </summary>
public interface IModelConfig
{
    /// <summary><see cref="StateDict.TransformerKind"/> or <see cref="StateDict.LanguageModelKind"/>.</summary>
    string Kind { get; }

    /// <summary>Padding token id (ignored by the loss, masked as a key); −1 for none.</summary>
    int PadId { get; }

    /// <summary>The configuration as JSON with PyTorch's names.</summary>
    string ToJson();

    /// <summary>A model of this configuration with freshly initialised weights drawn from <paramref name="seed"/>.</summary>
    /// <exception cref="ArgumentException">The config is inconsistent.</exception>
    IModel CreateModel(ComputeDevice device, int seed = 0);
}

/// <summary>
/// The hyper-parameters of the encoder–decoder Transformer, with PyTorch
/// <c>nn.Transformer</c>'s names (serialised in snake_case exactly as PyTorch spells them,
/// e.g. <c>d_model</c>, <c>nhead</c>, <c>dim_feedforward</c>, <c>norm_first</c>). Defaults are
/// the paper's base model, post-LN.
/// </summary>
public sealed record TransformerConfig : IModelConfig
{
    /// <summary>Model width (the paper's d_model).</summary>
    [JsonPropertyName("d_model")] public int DModel { get; init; } = 512;

    /// <summary>Attention heads; must divide d_model.</summary>
    [JsonPropertyName("nhead")] public int NHead { get; init; } = 8;

    /// <summary>N, encoder layers.</summary>
    [JsonPropertyName("num_encoder_layers")] public int NumEncoderLayers { get; init; } = 6;

    /// <summary>N, decoder layers.</summary>
    [JsonPropertyName("num_decoder_layers")] public int NumDecoderLayers { get; init; } = 6;

    /// <summary>Inner width of the feed-forward networks (the paper's d_ff).</summary>
    [JsonPropertyName("dim_feedforward")] public int DimFeedforward { get; init; } = 2048;

    /// <summary>Dropout on embeddings+PE and on each sub-layer output before the residual add (the paper's P_drop), and inside the FFN as PyTorch does.</summary>
    [JsonPropertyName("dropout")] public float Dropout { get; init; } = 0.1f;

    /// <summary>Feed-forward activation: relu (the paper), gelu (exact erf form, as PyTorch's "gelu") or gelu_tanh.</summary>
    [JsonPropertyName("activation")] public string Activation { get; init; } = "relu";

    /// <summary>ε added to the variance in every layer norm.</summary>
    [JsonPropertyName("layer_norm_eps")] public float LayerNormEps { get; init; } = 1e-5f;

    /// <summary>Pre-LN (LayerNorm before each sub-layer) instead of the paper's post-LN.</summary>
    [JsonPropertyName("norm_first")] public bool NormFirst { get; init; }

    /// <summary>Source vocabulary size.</summary>
    [JsonPropertyName("src_vocab_size")] public int SourceVocabularySize { get; init; } = 256;

    /// <summary>Target vocabulary size (equal to the source one when embeddings are shared).</summary>
    [JsonPropertyName("tgt_vocab_size")] public int TargetVocabularySize { get; init; } = 256;

    /// <summary>One embedding table for source, target and the output projection (the paper's weight sharing).</summary>
    [JsonPropertyName("share_embeddings")] public bool ShareEmbeddings { get; init; }

    /// <summary>Longest source or target sequence (positions beyond it are refused).</summary>
    [JsonPropertyName("max_seq_len")] public int MaxSequenceLength { get; init; } = 256;

    /// <summary>Multiply embeddings by √d_model before adding the positional encoding (the paper does).</summary>
    [JsonPropertyName("scale_embeddings")] public bool ScaleEmbeddings { get; init; } = true;

    /// <summary>Padding token id (ignored by the loss, masked as a key); −1 for none.</summary>
    [JsonPropertyName("pad_id")] public int PadId { get; init; } = -1;

    /// <summary>The activation as an enum.</summary>
    [JsonIgnore] public Activation ActivationKind => ConfigValidation.ParseActivation(Activation);

    /// <summary><see cref="StateDict.TransformerKind"/>.</summary>
    [JsonIgnore] public string Kind => StateDict.TransformerKind;

    /// <summary>A <see cref="Transformer"/> of this configuration.</summary>
    public IModel CreateModel(ComputeDevice device, int seed = 0) => new Transformer(device, this, seed);

    /// <summary>Throws an ArgumentException naming the first inconsistent value.</summary>
    public TransformerConfig Validate()
    {
        ConfigValidation.Common(DModel, NHead, DimFeedforward, Dropout, LayerNormEps, MaxSequenceLength, Activation);
        Require(NumEncoderLayers >= 1, $"num_encoder_layers must be ≥ 1, got {NumEncoderLayers}.");
        Require(NumDecoderLayers >= 1, $"num_decoder_layers must be ≥ 1, got {NumDecoderLayers}.");
        Require(SourceVocabularySize >= 1, $"src_vocab_size must be ≥ 1, got {SourceVocabularySize}.");
        Require(TargetVocabularySize >= 1, $"tgt_vocab_size must be ≥ 1, got {TargetVocabularySize}.");
        Require(!ShareEmbeddings || SourceVocabularySize == TargetVocabularySize,
            $"share_embeddings needs src_vocab_size == tgt_vocab_size, got {SourceVocabularySize} and {TargetVocabularySize}.");
        Require(PadId < Math.Min(SourceVocabularySize, TargetVocabularySize), $"pad_id {PadId} is outside the vocabulary.");
        return this;
    }

    /// <summary>The config as JSON with PyTorch's names (what a state dict stores).</summary>
    public string ToJson() => JsonSerializer.Serialize(this, ConfigValidation.JsonOptions);

    /// <summary>A config from its JSON (<see cref="ToJson"/>), validated.</summary>
    /// <exception cref="ArgumentException">A value out of range, named.</exception>
    public static TransformerConfig FromJson(string json) =>
        ConfigValidation.Deserialize<TransformerConfig>(json).Validate();

    private static void Require(bool condition, string message)
    {
        if (!condition)
            throw new ArgumentException(message);
    }
}

/// <summary>
/// A decoder-only language model (GPT-style): token embedding + positional encoding,
/// N causal self-attention blocks (attention and feed-forward, no cross-attention),
/// a final LayerNorm and a projection to vocabulary logits. Names follow
/// <see cref="TransformerConfig"/>.
/// </summary>
public sealed record LanguageModelConfig : IModelConfig
{
    /// <summary><see cref="EmbeddingInit"/>: N(0, 1), <c>nn.Embedding</c>'s default.</summary>
    public const string NormalEmbeddingInit = "normal";

    /// <summary><see cref="EmbeddingInit"/>: N(0, 1/d_model), the training presets' start.</summary>
    public const string ScaledNormalEmbeddingInit = "scaled_normal";

    /// <summary>d_model, the width of every token vector.</summary>
    [JsonPropertyName("d_model")] public int DModel { get; init; } = 256;

    /// <summary>Attention heads; must divide d_model.</summary>
    [JsonPropertyName("nhead")] public int NHead { get; init; } = 8;

    /// <summary>N, decoder-only layers (encoder layers with a causal mask).</summary>
    [JsonPropertyName("num_layers")] public int NumLayers { get; init; } = 4;

    /// <summary>Inner width of the feed-forward networks (the paper's d_ff).</summary>
    [JsonPropertyName("dim_feedforward")] public int DimFeedforward { get; init; } = 1024;

    /// <summary>Dropout on embeddings+PE, each sub-layer output and inside the FFN, as PyTorch does.</summary>
    [JsonPropertyName("dropout")] public float Dropout { get; init; } = 0.1f;

    /// <summary>Feed-forward activation: relu, gelu (exact erf form) or gelu_tanh.</summary>
    [JsonPropertyName("activation")] public string Activation { get; init; } = "gelu_tanh";

    /// <summary>ε added to the variance in every layer norm.</summary>
    [JsonPropertyName("layer_norm_eps")] public float LayerNormEps { get; init; } = 1e-5f;

    /// <summary>Pre-LN is the usual choice for decoder-only models; post-LN is available.</summary>
    [JsonPropertyName("norm_first")] public bool NormFirst { get; init; } = true;

    /// <summary>V, the token ids the model reads and predicts.</summary>
    [JsonPropertyName("vocab_size")] public int VocabularySize { get; init; } = 256;

    /// <summary>Most positions a sequence may have (the positional encoding's length).</summary>
    [JsonPropertyName("max_seq_len")] public int MaxSequenceLength { get; init; } = 256;

    /// <summary>Use the token embedding as the output projection (no separate lm_head weight).</summary>
    [JsonPropertyName("tie_weights")] public bool TieWeights { get; init; } = true;

    /// <summary>Multiply the embeddings by √d_model before adding the positional encoding (the paper's convention).</summary>
    [JsonPropertyName("scale_embeddings")] public bool ScaleEmbeddings { get; init; } = true;

    /// <summary>Padding token id (ignored by the loss, masked as a key); −1 for none.</summary>
    [JsonPropertyName("pad_id")] public int PadId { get; init; } = -1;

    /// <summary>
    /// How the token embedding starts: null or <see cref="NormalEmbeddingInit"/>, N(0, 1) as
    /// <c>nn.Embedding</c> (PyTorch's models and the parity golden files); or
    /// <see cref="ScaledNormalEmbeddingInit"/>, N(0, 1/d_model), the Transformer paper's convention
    /// for a table shared with the output projection, which the training presets use: with the
    /// √d_model input scale the embeddings then have unit variance (like the positional encoding),
    /// and tied logits start with unit variance (loss ≈ ln V) instead of standard deviation √d_model.
    /// Not written when null, so configs from PyTorch tools read and write back unchanged.
    /// </summary>
    [JsonPropertyName("embedding_init")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? EmbeddingInit { get; init; }

    /// <summary><see cref="Activation"/> parsed.</summary>
    [JsonIgnore] public Activation ActivationKind => ConfigValidation.ParseActivation(Activation);

    /// <summary>The standard deviation of the token embedding's N(0, std²) start (<see cref="EmbeddingInit"/>): 1, or 1/√d_model.</summary>
    [JsonIgnore] public float EmbeddingInitStd => EmbeddingInit == ScaledNormalEmbeddingInit ? 1f / MathF.Sqrt(DModel) : 1f;

    /// <summary><see cref="StateDict.LanguageModelKind"/>.</summary>
    [JsonIgnore] public string Kind => StateDict.LanguageModelKind;

    /// <summary>A <see cref="LanguageModel"/> of this configuration.</summary>
    public IModel CreateModel(ComputeDevice device, int seed = 0) => new LanguageModel(device, this, seed);

    /// <summary>Throws an ArgumentException naming the first inconsistent value.</summary>
    public LanguageModelConfig Validate()
    {
        ConfigValidation.Common(DModel, NHead, DimFeedforward, Dropout, LayerNormEps, MaxSequenceLength, Activation);
        if (NumLayers < 1)
            throw new ArgumentException($"num_layers must be ≥ 1, got {NumLayers}.");
        if (VocabularySize < 1)
            throw new ArgumentException($"vocab_size must be ≥ 1, got {VocabularySize}.");
        if (PadId < -1 || PadId >= VocabularySize)
            throw new ArgumentException($"pad_id {PadId} is outside the vocabulary (−1 for none).");
        if (EmbeddingInit is not (null or NormalEmbeddingInit or ScaledNormalEmbeddingInit))
            throw new ArgumentException($"Unknown embedding_init '{EmbeddingInit}'. Known: {NormalEmbeddingInit} (N(0, 1), PyTorch's), {ScaledNormalEmbeddingInit} (N(0, 1/d_model)).");
        return this;
    }

    /// <summary>The config as JSON with PyTorch's names (what a state dict stores).</summary>
    public string ToJson() => JsonSerializer.Serialize(this, ConfigValidation.JsonOptions);

    /// <summary>A config from its JSON (<see cref="ToJson"/>), validated.</summary>
    /// <exception cref="ArgumentException">A value out of range, named.</exception>
    public static LanguageModelConfig FromJson(string json) =>
        ConfigValidation.Deserialize<LanguageModelConfig>(json).Validate();
}

internal static class ConfigValidation
{
    public static readonly JsonSerializerOptions JsonOptions = new() { WriteIndented = false };

    public static void Common(int dModel, int nHead, int dimFeedforward, float dropout, float eps, int maxSequenceLength, string activation)
    {
        if (dModel < 1)
            throw new ArgumentException($"d_model must be ≥ 1, got {dModel}.");
        if (nHead < 1)
            throw new ArgumentException($"nhead must be ≥ 1, got {nHead}.");
        if (dModel % nHead != 0)
            throw new ArgumentException($"d_model ({dModel}) must be divisible by nhead ({nHead}).");
        if (dimFeedforward < 1)
            throw new ArgumentException($"dim_feedforward must be ≥ 1, got {dimFeedforward}.");
        if (!(dropout >= 0 && dropout < 1))
            throw new ArgumentException($"dropout must be in [0, 1), got {dropout}.");
        if (!(eps > 0))
            throw new ArgumentException($"layer_norm_eps must be positive, got {eps}.");
        if (maxSequenceLength < 1)
            throw new ArgumentException($"max_seq_len must be ≥ 1, got {maxSequenceLength}.");
        _ = ParseActivation(activation);
    }

    public static Activation ParseActivation(string name) => name?.ToLowerInvariant() switch
    {
        "relu" => Kernels.Activation.Relu,
        "gelu_tanh" => Kernels.Activation.Gelu,
        "gelu" or "gelu_exact" => Kernels.Activation.GeluExact,
        _ => throw new ArgumentException($"Unknown activation '{name}'. Known: relu, gelu (exact erf form, as PyTorch), gelu_tanh (tanh form)."),
    };

    public static T Deserialize<T>(string json)
    {
        try
        {
            return JsonSerializer.Deserialize<T>(json, JsonOptions)
                ?? throw new InvalidDataException($"Config JSON is empty: {json}");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"Config JSON is malformed: {e.Message}", e);
        }
    }
}
