using GpuTransformer.Kernels.Backends;
using GpuTransformer.Layers.IO;
using GpuTransformer.Layers;
using GpuTransformer.Training.Tokenizers;

namespace GpuTransformer.Training.Generation;

/// <summary>
/// Loads a language model for generation from a training checkpoint (<see cref="Checkpoint"/>:
/// weights, optimizer moments, run state, tokenizer) or a plain StateDict file (weights, model kind
/// and config), with its tokenizer: the JSON description stored under <see cref="TokenizerKey"/>
/// in the metadata, or a tokenizer JSON file given explicitly. <see cref="SaveLanguageModel"/>
/// writes the plain kind, its tokenizer included, so that one file is all generation needs.
/// </summary>
public static class ModelCheckpoint
{
    /// <summary>Metadata key of the tokenizer's JSON description (the trainer's <see cref="Checkpoint.TokenizerKey"/>).</summary>
    internal const string TokenizerKey = Checkpoint.TokenizerKey;

    /// <summary>Reads <paramref name="path"/>, checking it exists first (a message that says what to do).</summary>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    public static SafeTensorFile Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path))
            throw new FileNotFoundException($"Checkpoint '{path}' does not exist.", path);
        return SafeTensors.Read(path);
    }

    /// <summary>
    /// The tokenizer of a checkpoint: from <paramref name="tokenizerPath"/> when given (and then it
    /// must equal the stored one, if any), else from the metadata.
    /// </summary>
    /// <exception cref="InvalidDataException">No tokenizer stored and none given, or a malformed one.</exception>
    /// <exception cref="TokenizerMismatchException">The given tokenizer differs from the stored one.</exception>
    public static ITokenizer Tokenizer(SafeTensorFile file, string? tokenizerPath = null)
    {
        ArgumentNullException.ThrowIfNull(file);
        ITokenizer? stored = null;
        if (file.Metadata.TryGetValue(TokenizerKey, out var json))
        {
            try
            {
                stored = TokenizerFactory.FromJson(json);
            }
            catch (FormatException e)
            {
                throw new InvalidDataException($"'{file.Source}' holds a malformed tokenizer: {e.Message}", e);
            }
        }
        if (tokenizerPath is null)
        {
            return stored ?? throw new InvalidDataException(
                $"'{file.Source}' has no tokenizer in its metadata ('{TokenizerKey}'); give its tokenizer JSON file with --tokenizer.");
        }
        if (!File.Exists(tokenizerPath))
            throw new FileNotFoundException($"Tokenizer file '{tokenizerPath}' does not exist.", tokenizerPath);
        var given = TokenizerFactory.Load(tokenizerPath);
        if (stored is not null)
            TokenizerFactory.EnsureSame(stored, given);
        return given;
    }

    /// <summary>The language model a checkpoint holds, on <paramref name="device"/>, in evaluation mode, with its tokenizer.</summary>
    /// <exception cref="InvalidDataException">Not a language-model checkpoint, weights that do not match its config, or a tokenizer larger than the model's vocabulary.</exception>
    public static (LanguageModel Model, ITokenizer Tokenizer) LoadLanguageModel(ComputeDevice device, string path, string? tokenizerPath = null) =>
        LoadLanguageModel(device, Read(path), tokenizerPath);

    /// <summary>The language model of a checkpoint already read (<see cref="Read"/>), on <paramref name="device"/>, in evaluation mode, with its tokenizer.</summary>
    /// <exception cref="InvalidDataException">Not a language-model checkpoint, weights that do not match its config, or a tokenizer larger than the model's vocabulary.</exception>
    public static (LanguageModel Model, ITokenizer Tokenizer) LoadLanguageModel(ComputeDevice device, SafeTensorFile file, string? tokenizerPath = null)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(file);
        var config = StateDict.ReadLanguageModelConfig(file);
        var tokenizer = Tokenizer(file, tokenizerPath);
        if (tokenizer.VocabularySize > config.VocabularySize)
            throw new InvalidDataException($"The tokenizer {TokenizerFactory.Describe(tokenizer)} has more ids than the model's vocabulary ({config.VocabularySize}).");
        var model = new LanguageModel(device, config);
        try
        {
            // A training checkpoint also holds the optimizer's moments; a plain state dict must match exactly.
            var training = file.Metadata.GetValueOrDefault(Checkpoint.KindKey) == Checkpoint.Kind;
            StateDict.Load(model, file, new StateDictLoadOptions { IgnoreExtraTensors = training });
        }
        catch
        {
            model.Dispose();
            throw;
        }
        model.Training = false;
        return (model, tokenizer);
    }

    /// <summary>
    /// Writes <paramref name="model"/>'s weights as a StateDict file (kind and config in the
    /// metadata) with <paramref name="tokenizer"/> under <see cref="TokenizerKey"/>: what
    /// <see cref="LoadLanguageModel(ComputeDevice, string, string?)"/> reads back alone.
    /// </summary>
    /// <exception cref="ArgumentException">The tokenizer has more ids than the model's vocabulary.</exception>
    public static void SaveLanguageModel(LanguageModel model, ITokenizer tokenizer, string path)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(path);
        if (tokenizer.VocabularySize > model.Config.VocabularySize)
            throw new ArgumentException($"The tokenizer {TokenizerFactory.Describe(tokenizer)} has more ids than the model's vocabulary ({model.Config.VocabularySize}).", nameof(tokenizer));
        model.SaveStateDict(path, new Dictionary<string, string> { [TokenizerKey] = TokenizerFactory.ToJson(tokenizer) });
    }
}
