using System.Text;
using System.Text.Json.Nodes;

namespace GpuTransformer.Training.Tokenizers;

/// <summary>
/// Word-level, in the WikiText convention (as PyTorch's word_language_model reads it): each line
/// is split on whitespace and followed by <c>&lt;eos&gt;</c>, so <c>&lt;eos&gt;</c> is the newline.
/// A final line without a newline still gets its <c>&lt;eos&gt;</c>; blank lines give a lone
/// <c>&lt;eos&gt;</c>. Words outside the vocabulary become <c>&lt;unk&gt;</c>, WikiText's literal
/// <c>&lt;unk&gt;</c> included (as are literal <c>&lt;pad&gt;</c>/<c>&lt;bos&gt;</c>/<c>&lt;eos&gt;</c>: only a
/// newline makes <c>&lt;eos&gt;</c>).
/// <para>
/// Ids: 0 <c>&lt;pad&gt;</c>, 1 <c>&lt;bos&gt;</c>, 2 <c>&lt;eos&gt;</c>, 3 <c>&lt;unk&gt;</c>, then the
/// vocabulary built from the training text by <see cref="Train"/>: words seen at least
/// <c>minFrequency</c> times, most frequent first (ties in ordinal order), at most <c>maxVocabulary</c>
/// ids in all. <see cref="Decode"/> joins words of a line with single spaces and writes <c>&lt;eos&gt;</c>
/// as <c>\n</c>, so a text round-trips exactly when its words are in the vocabulary, it uses single
/// spaces, has no leading/trailing spaces on lines, and ends with a newline.
/// </para>
/// </summary>
public sealed class WordTokenizer : ITokenizer
{
    /// <summary>The kind stored in a tokenizer's JSON.</summary>
    public const string KindName = "word";

    private static readonly SpecialTokenIds Ids = new(Pad: 0, Bos: 1, Eos: 2, Unk: 3);

    private readonly string[] tokens;
    private readonly Dictionary<string, int> index;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> lookup;

    /// <summary>A tokenizer over <paramref name="words"/> (ids 4 onwards, in this order).</summary>
    public WordTokenizer(IEnumerable<string> words, int minFrequency = 1, int maxVocabulary = int.MaxValue)
    {
        ArgumentNullException.ThrowIfNull(words);
        tokens = [.. TokenizerChecks.SpecialTexts, .. words];
        index = new Dictionary<string, int>(tokens.Length, StringComparer.Ordinal);
        for (var i = 0; i < tokens.Length; i++)
        {
            var token = tokens[i];
            if (token.Length == 0 || token.Any(char.IsWhiteSpace))
                throw new ArgumentException($"Vocabulary word {i} ('{token}') is empty or contains whitespace.", nameof(words));
            if (!index.TryAdd(token, i))
                throw new ArgumentException($"Vocabulary word '{token}' appears twice (ids {index[token]} and {i}).", nameof(words));
        }
        lookup = index.GetAlternateLookup<ReadOnlySpan<char>>();
        MinFrequency = minFrequency;
        MaxVocabulary = maxVocabulary;
    }

    /// <summary>Builds the vocabulary from <paramref name="trainingTexts"/>; see the class summary.</summary>
    public static WordTokenizer Train(IEnumerable<string> trainingTexts, int minFrequency = 1, int maxVocabulary = int.MaxValue)
    {
        ArgumentNullException.ThrowIfNull(trainingTexts);
        ArgumentOutOfRangeException.ThrowIfLessThan(minFrequency, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxVocabulary, TokenizerChecks.SpecialTexts.Length);
        var counts = new Dictionary<string, long>(StringComparer.Ordinal);
        var countsBySpan = counts.GetAlternateLookup<ReadOnlySpan<char>>();
        foreach (var text in trainingTexts)
        {
            foreach (var range in Words(text))
            {
                var word = text.AsSpan(range.Start, range.Length);
                countsBySpan[word] = countsBySpan.TryGetValue(word, out var c) ? c + 1 : 1;
            }
        }
        var words = counts
            .Where(kv => kv.Value >= minFrequency && Array.IndexOf(TokenizerChecks.SpecialTexts, kv.Key) < 0)
            .OrderByDescending(kv => kv.Value)
            .ThenBy(kv => kv.Key, StringComparer.Ordinal)
            .Take(maxVocabulary - TokenizerChecks.SpecialTexts.Length)
            .Select(kv => kv.Key);
        return new WordTokenizer(words, minFrequency, maxVocabulary);
    }

    /// <inheritdoc/>
    public string Name => KindName;

    /// <inheritdoc/>
    public int VocabularySize => tokens.Length;

    /// <inheritdoc/>
    public SpecialTokenIds Specials => Ids;

    /// <summary>Least count of a word kept by <see cref="Train"/> (recorded for the description).</summary>
    public int MinFrequency { get; }

    /// <summary>Most ids <see cref="Train"/> allowed (recorded for the description).</summary>
    public int MaxVocabulary { get; }

    /// <inheritdoc/>
    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 5 + 1);
        var span = text.AsSpan();
        var lineStart = 0;
        while (lineStart < span.Length)
        {
            var newline = span[lineStart..].IndexOf('\n');
            var lineEnd = newline < 0 ? span.Length : lineStart + newline;
            foreach (var range in Words(text, lineStart, lineEnd))
            {
                // Only newlines make <eos>: a literal "<pad>", "<bos>" or "<eos>" in the text is unknown like any unseen word.
                var known = lookup.TryGetValue(span.Slice(range.Start, range.Length), out var id) && id > Ids.Eos;
                ids.Add(known ? id : Ids.Unk!.Value);
            }
            ids.Add(Ids.Eos);
            lineStart = lineEnd + 1;
        }
        return [.. ids];
    }

    /// <inheritdoc/>
    public string Decode(ReadOnlySpan<int> ids)
    {
        var text = new StringBuilder(ids.Length * 6);
        var lineStart = true;
        foreach (var id in ids)
        {
            TokenizerChecks.InRange(id, tokens.Length);
            if (id == Ids.Pad || id == Ids.Bos)
                continue;
            if (id == Ids.Eos)
            {
                text.Append('\n');
                lineStart = true;
                continue;
            }
            if (!lineStart)
                text.Append(' ');
            text.Append(tokens[id]);
            lineStart = false;
        }
        return text.ToString();
    }

    /// <inheritdoc/>
    public string TokenText(int id)
    {
        TokenizerChecks.InRange(id, tokens.Length);
        return tokens[id];
    }

    /// <summary>The vocabulary in id order, specials first.</summary>
    public IReadOnlyList<string> Tokens => tokens;

    /// <inheritdoc/>
    public JsonObject ToJson() => new()
    {
        ["kind"] = KindName,
        ["version"] = 1,
        ["min_frequency"] = MinFrequency,
        ["max_vocabulary"] = MaxVocabulary,
        ["tokens"] = new JsonArray([.. tokens.Select(t => JsonValue.Create(t))]),
    };

    internal static WordTokenizer FromJson(JsonObject json) => new(
        TokenizerJson.Strings(json, "tokens").Skip(TokenizerChecks.SpecialTexts.Length),
        TokenizerJson.Int(json, "min_frequency"),
        TokenizerJson.Int(json, "max_vocabulary"));

    /// <summary>The whitespace-separated words of the whole text (lines ignored).</summary>
    private static IEnumerable<(int Start, int Length)> Words(string text) => Words(text, 0, text.Length);

    private static IEnumerable<(int Start, int Length)> Words(string text, int start, int end)
    {
        var i = start;
        while (i < end)
        {
            while (i < end && char.IsWhiteSpace(text[i]))
                i++;
            var wordStart = i;
            while (i < end && !char.IsWhiteSpace(text[i]))
                i++;
            if (i > wordStart)
                yield return (wordStart, i - wordStart);
        }
    }
}
