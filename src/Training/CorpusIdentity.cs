using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using GpuTransformer.Training.Data;

namespace GpuTransformer.Training;

/// <summary>
/// Which corpus and split a run trained on, stored in its checkpoints so that <c>eval</c> and a
/// resumed run find the same text, and a reader knows what the numbers refer to.
/// </summary>
/// <param name="Name">The corpus's short name (<c>sotu</c>, a folder or file name).</param>
/// <param name="Argument">What to load again: <c>sotu</c> for the default, else the full path of what the user passed as
/// <c>--corpus</c> (checkpoints written before this was resolved may hold a relative path).</param>
/// <param name="Source">Where the text was read from (a path).</param>
/// <param name="SplitSeed">Seed of the by-document split.</param>
/// <param name="SplitRule">The split rule in words.</param>
/// <param name="TrainTokens">Tokens in the training stream.</param>
/// <param name="ValidTokens">Tokens in the validation stream.</param>
/// <param name="TestTokens">Tokens in the test stream.</param>
/// <param name="ContentSha256">SHA-256 of the split documents (<see cref="ContentHash"/>); null in checkpoints written before it was stored.</param>
public sealed record CorpusIdentity(
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("argument")] string Argument,
    [property: JsonPropertyName("source")] string Source,
    [property: JsonPropertyName("split_seed")] int SplitSeed,
    [property: JsonPropertyName("split_rule")] string SplitRule,
    [property: JsonPropertyName("train_tokens")] long TrainTokens,
    [property: JsonPropertyName("valid_tokens")] long ValidTokens,
    [property: JsonPropertyName("test_tokens")] long TestTokens,
    [property: JsonPropertyName("content_sha256")] string? ContentSha256 = null)
{
    /// <summary>The identity of <paramref name="corpus"/> loaded from <paramref name="argument"/> with <paramref name="splitSeed"/>, tokenised as <paramref name="tokens"/>.</summary>
    public static CorpusIdentity Of(TextCorpus corpus, string? argument, int splitSeed, TokenizedCorpus tokens)
    {
        ArgumentNullException.ThrowIfNull(corpus);
        ArgumentNullException.ThrowIfNull(tokens);
        return new CorpusIdentity(corpus.Name, ResolveArgument(argument), corpus.Source, splitSeed,
            corpus.SplitRule, tokens.Train.Length, tokens.Valid.Length, tokens.Test.Length, ContentHash(corpus));
    }

    /// <summary>
    /// What to load to find this corpus again, from any working directory: <see cref="Argument"/> when it is
    /// the default or a full path, else (a relative path from an older checkpoint) the full <see cref="Source"/>.
    /// </summary>
    [JsonIgnore]
    public string Location => Argument == Corpora.DefaultName || Path.IsPathFullyQualified(Argument) ? Argument : Source;

    /// <summary><c>--corpus</c> as stored: <see cref="Corpora.DefaultName"/> for none or the default, else the full path (so a run resumes from any working directory).</summary>
    public static string ResolveArgument(string? argument) =>
        string.IsNullOrWhiteSpace(argument) || string.Equals(argument.Trim(), Corpora.DefaultName, StringComparison.OrdinalIgnoreCase)
            ? Corpora.DefaultName
            : Path.GetFullPath(argument);

    /// <summary>SHA-256 (hex) of every document's name and text, train then valid then test: equal only for the same text split the same way.</summary>
    internal static string ContentHash(TextCorpus corpus)
    {
        ArgumentNullException.ThrowIfNull(corpus);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var split in new[] { CorpusSplit.Train, CorpusSplit.Valid, CorpusSplit.Test })
        {
            foreach (var document in corpus.Documents(split))
            {
                hash.AppendData(Encoding.UTF8.GetBytes(document.Name));
                hash.AppendData([0]);
                hash.AppendData(Encoding.UTF8.GetBytes(document.Text));
                hash.AppendData([0]);
            }
            hash.AppendData([1]);
        }
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    /// <summary>
    /// Refuses to continue this run on <paramref name="corpus"/> unless it is the same text split the
    /// same way (by <see cref="ContentSha256"/>; identities without one are checked by token counts
    /// when the data position is restored).
    /// </summary>
    /// <exception cref="CorpusException">Another text, or the same text split differently.</exception>
    internal void RequireSameText(TextCorpus corpus)
    {
        ArgumentNullException.ThrowIfNull(corpus);
        if (ContentSha256 is null)
            return;
        var actual = ContentHash(corpus);
        if (actual != ContentSha256)
        {
            throw new CorpusException(
                $"The corpus '{corpus.Source}' is not the text this run trained on ('{Source}', content SHA-256 {ContentSha256[..12]}…; now {actual[..12]}…): " +
                "resume with the same corpus and split seed, or start a new run.");
        }
    }

    /// <summary>Compact JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this);

    /// <summary>Reads <see cref="ToJson"/>'s text.</summary>
    /// <exception cref="InvalidDataException">Malformed.</exception>
    internal static CorpusIdentity FromJson(string json)
    {
        try
        {
            return JsonSerializer.Deserialize<CorpusIdentity>(json) ?? throw new InvalidDataException("The corpus identity is empty.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"The corpus identity is malformed: {e.Message}", e);
        }
    }
}
