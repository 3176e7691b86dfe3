using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace GpuTransformer.Training.Tokenizers;

/// <summary>Settings of the tokenizers that learn a vocabulary.</summary>
public sealed record TokenizerOptions
{
    /// <summary>Word-level: least count in the training text for a word to get an id.</summary>
    public int WordMinFrequency { get; init; } = 3;

    /// <summary>Word-level: most ids in all (specials included).</summary>
    public int WordMaxVocabulary { get; init; } = 32_768;
}

/// <summary>A checkpoint's tokenizer differs from the one requested.</summary>
public sealed class TokenizerMismatchException : InvalidOperationException
{
    /// <inheritdoc/>
    public TokenizerMismatchException()
    {
    }

    /// <inheritdoc/>
    public TokenizerMismatchException(string message)
        : base(message)
    {
    }

    /// <inheritdoc/>
    public TokenizerMismatchException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>
/// Creates tokenizers by kind, saves and loads their JSON descriptions, and tells whether two
/// are the same (<see cref="Fingerprint"/>: SHA-256 of the compact JSON description).
/// </summary>
public static class TokenizerFactory
{
    /// <summary>The kinds, as the command line spells them.</summary>
    public static readonly IReadOnlyList<string> Kinds = [ByteTokenizer.KindName, WordTokenizer.KindName, CompactBpeTokenizer.KindName];

    private static readonly JsonSerializerOptions Compact = new() { WriteIndented = false };

    /// <summary>Normalises a kind name (<c>bpe</c> and <c>cl100k</c> are accepted for <c>bpe-cl100k</c>).</summary>
    /// <exception cref="ArgumentException">Unknown kind; the message lists the known ones.</exception>
    public static string ParseKind(string kind)
    {
        ArgumentNullException.ThrowIfNull(kind);
        return kind.Trim().ToLowerInvariant() switch
        {
            "byte" or "bytes" => ByteTokenizer.KindName,
            "word" or "words" => WordTokenizer.KindName,
            "bpe" or "cl100k" or "bpe-cl100k" or "cl100k_base" => CompactBpeTokenizer.KindName,
            _ => throw new ArgumentException($"Unknown tokenizer '{kind}'. Known tokenizers: {string.Join(", ", Kinds)}.", nameof(kind)),
        };
    }

    /// <summary>
    /// A tokenizer of <paramref name="kind"/>; word and BPE learn their vocabulary from
    /// <paramref name="trainingTexts"/> (the training split only, so validation measures unseen text).
    /// </summary>
    public static ITokenizer Create(string kind, IEnumerable<string> trainingTexts, TokenizerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(trainingTexts);
        options ??= new TokenizerOptions();
        return ParseKind(kind) switch
        {
            ByteTokenizer.KindName => new ByteTokenizer(),
            WordTokenizer.KindName => WordTokenizer.Train(trainingTexts, options.WordMinFrequency, options.WordMaxVocabulary),
            _ => CompactBpeTokenizer.Train(trainingTexts),
        };
    }

    /// <summary>The compact JSON description (what a checkpoint stores).</summary>
    public static string ToJson(ITokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        return tokenizer.ToJson().ToJsonString(Compact);
    }

    /// <summary>Rebuilds a tokenizer from <see cref="ToJson(ITokenizer)"/>'s text.</summary>
    /// <exception cref="FormatException">Not a tokenizer description, unknown kind or version, or a malformed field.</exception>
    public static ITokenizer FromJson(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        JsonObject root;
        try
        {
            root = JsonNode.Parse(json) as JsonObject ?? throw new FormatException("A tokenizer description must be a JSON object.");
        }
        catch (JsonException e)
        {
            throw new FormatException($"Tokenizer description is not valid JSON: {e.Message}", e);
        }
        try
        {
            var kind = root["kind"]?.GetValue<string>() ?? throw new FormatException("Tokenizer description has no 'kind'.");
            var version = root["version"]?.GetValue<int>() ?? 0;
            if (version != 1)
                throw new FormatException($"Tokenizer description version {version} is not supported (expected 1).");
            return kind switch
            {
                ByteTokenizer.KindName => new ByteTokenizer(),
                WordTokenizer.KindName => WordTokenizer.FromJson(root),
                CompactBpeTokenizer.KindName => CompactBpeTokenizer.FromJson(root),
                _ => throw new FormatException($"Unknown tokenizer kind '{kind}'. Known: {string.Join(", ", Kinds)}."),
            };
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException)
        {
            throw new FormatException($"Malformed tokenizer description: {e.Message}", e);
        }
    }

    /// <summary>Writes the JSON description to <paramref name="path"/>.</summary>
    public static void Save(ITokenizer tokenizer, string path) => File.WriteAllText(path, ToJson(tokenizer) + "\n");

    /// <summary>Reads a tokenizer saved by <see cref="Save"/>.</summary>
    public static ITokenizer Load(string path) => FromJson(File.ReadAllText(path));

    /// <summary>SHA-256 (hex) of the compact JSON description: equal fingerprints ⇔ same ids for the same text.</summary>
    public static string Fingerprint(ITokenizer tokenizer) =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(ToJson(tokenizer))));

    /// <summary>Do <paramref name="a"/> and <paramref name="b"/> map text to the same ids?</summary>
    public static bool AreSame(ITokenizer a, ITokenizer b) => Fingerprint(a) == Fingerprint(b);

    /// <summary>One line describing <paramref name="tokenizer"/>: kind, vocabulary, short fingerprint.</summary>
    public static string Describe(ITokenizer tokenizer) =>
        $"{tokenizer.Name} (vocabulary {tokenizer.VocabularySize:N0}, fingerprint {Fingerprint(tokenizer)[..12]})";

    /// <summary>Throws unless the checkpoint's tokenizer is the requested one.</summary>
    /// <exception cref="TokenizerMismatchException">They differ; the message names both.</exception>
    public static void EnsureSame(ITokenizer checkpoint, ITokenizer requested)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        ArgumentNullException.ThrowIfNull(requested);
        if (AreSame(checkpoint, requested))
            return;
        var why = checkpoint.Name != requested.Name
            ? "a different kind"
            : checkpoint.VocabularySize != requested.VocabularySize
                ? "a different vocabulary size (built from other training text or settings)"
                : "the same size but different tokens (built from other training text or settings)";
        throw Mismatch(checkpoint, Describe(requested), why);
    }

    /// <summary>
    /// Throws unless the checkpoint's tokenizer is of <paramref name="requestedKind"/>: the part of
    /// <see cref="EnsureSame"/> that needs no training text, so a command can refuse before it loads a corpus.
    /// </summary>
    /// <exception cref="TokenizerMismatchException">Another kind; the message names both.</exception>
    /// <exception cref="ArgumentException">An unknown kind.</exception>
    public static void EnsureSameKind(ITokenizer checkpoint, string requestedKind)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        var kind = ParseKind(requestedKind);
        if (kind != checkpoint.Name)
            throw Mismatch(checkpoint, $"a {kind} tokenizer", "a different kind");
    }

    private static TokenizerMismatchException Mismatch(ITokenizer checkpoint, string requested, string why) => new(
        $"The checkpoint was trained with tokenizer {Describe(checkpoint)}, but {requested} was requested: {why}. " +
        "Use the checkpoint's tokenizer (omit --tokenizer) or train a new model.");
}
