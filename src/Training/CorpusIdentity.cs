using System.Text.Json;
using System.Text.Json.Serialization;
using GpuTransformer.Training.Data;

namespace GpuTransformer.Training;

/// <summary>
/// Which corpus and split a run trained on, stored in its checkpoints so that <c>eval</c> and a
/// resumed run find the same text, and a reader knows what the numbers refer to.
/// </summary>
/// <param name="Name">The corpus's short name (<c>sotu</c>, a folder or file name).</param>
/// <param name="Argument">What the user passed as <c>--corpus</c> (<c>sotu</c> for the default): what to load again.</param>
/// <param name="Source">Where the text was read from (a path).</param>
/// <param name="SplitSeed">Seed of the by-document split.</param>
/// <param name="SplitRule">The split rule in words.</param>
/// <param name="TrainTokens">Tokens in the training stream.</param>
/// <param name="ValidTokens">Tokens in the validation stream.</param>
/// <param name="TestTokens">Tokens in the test stream.</param>
public sealed record CorpusIdentity(
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("argument")] string Argument,
    [property: JsonPropertyName("source")] string Source,
    [property: JsonPropertyName("split_seed")] int SplitSeed,
    [property: JsonPropertyName("split_rule")] string SplitRule,
    [property: JsonPropertyName("train_tokens")] long TrainTokens,
    [property: JsonPropertyName("valid_tokens")] long ValidTokens,
    [property: JsonPropertyName("test_tokens")] long TestTokens)
{
    /// <summary>The identity of <paramref name="corpus"/> loaded from <paramref name="argument"/> with <paramref name="splitSeed"/>, tokenised as <paramref name="tokens"/>.</summary>
    public static CorpusIdentity Of(TextCorpus corpus, string? argument, int splitSeed, TokenizedCorpus tokens)
    {
        ArgumentNullException.ThrowIfNull(corpus);
        ArgumentNullException.ThrowIfNull(tokens);
        return new CorpusIdentity(corpus.Name, string.IsNullOrWhiteSpace(argument) ? Corpora.DefaultName : argument, corpus.Source, splitSeed,
            corpus.SplitRule, tokens.Train.Length, tokens.Valid.Length, tokens.Test.Length);
    }

    /// <summary>Compact JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this);

    /// <summary>Reads <see cref="ToJson"/>'s text.</summary>
    /// <exception cref="InvalidDataException">Malformed.</exception>
    public static CorpusIdentity FromJson(string json)
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
