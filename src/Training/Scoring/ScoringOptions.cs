using System.Globalization;

namespace GpuTransformer.Training.Scoring;

/// <summary>Options of <see cref="LanguageModelScorer"/> and <see cref="TranslationScorer"/>.</summary>
public sealed record ScoringOptions
{
    /// <summary>The k most likely next tokens kept per position (1 … vocabulary size).</summary>
    public int TopK { get; init; } = 5;

    /// <summary>
    /// Language model: the most tokens one forward sees (1 … max_seq_len; null: max_seq_len).
    /// A text with more scored tokens than this is scored with a sliding window (<see cref="ScoringWindows"/>).
    /// </summary>
    public int? Window { get; init; }

    /// <summary>Language model: how far each window starts after the previous one (1 … window; null: half the window, rounded up).</summary>
    public int? Stride { get; init; }

    /// <summary>Windows (language model) or pairs (translation) per forward.</summary>
    public int BatchSize { get; init; } = 8;

    /// <summary>
    /// Language model: condition the first token on &lt;eos&gt;, the separator the corpus streams put
    /// before every document (as generation does), so every token of the text is scored.
    /// Off: the text's first token is context only.
    /// </summary>
    public bool StartWithSeparator { get; init; } = true;

    /// <summary>
    /// Language model: also score &lt;eos&gt; after the text (the text as a whole document), unless
    /// the tokenizer already ends it with &lt;eos&gt; (the word tokenizer ends every line so).
    /// </summary>
    public bool ScoreEndOfText { get; init; }

    /// <summary>The window in effect for a model of context <paramref name="maxSequenceLength"/>.</summary>
    public int WindowFor(int maxSequenceLength) => Window ?? maxSequenceLength;

    /// <summary>The stride in effect for a model of context <paramref name="maxSequenceLength"/>.</summary>
    public int StrideFor(int maxSequenceLength) => Stride ?? (WindowFor(maxSequenceLength) + 1) / 2;

    /// <summary>Returns this after checking every field against a model of <paramref name="vocabularySize"/> ids and context <paramref name="maxSequenceLength"/>.</summary>
    /// <exception cref="ArgumentException">Top-k outside 1 … vocabulary, a window outside 1 … max_seq_len, a stride outside 1 … window, or a batch size below 1.</exception>
    public ScoringOptions Validate(int vocabularySize, int maxSequenceLength)
    {
        var c = CultureInfo.InvariantCulture;
        if (TopK < 1 || TopK > vocabularySize)
            throw new ArgumentException(string.Create(c, $"Top-k must be between 1 and the model's vocabulary of {vocabularySize} ids, got {TopK}."));
        if (Window is { } window && (window < 1 || window > maxSequenceLength))
        {
            throw new ArgumentException(window < 1
                ? string.Create(c, $"The window must be at least 1 token, got {window}.")
                : string.Create(c, $"A window of {window} tokens is larger than the model's context (max_seq_len {maxSequenceLength})."));
        }
        var effective = WindowFor(maxSequenceLength);
        if (Stride is { } stride && (stride < 1 || stride > effective))
            throw new ArgumentException(string.Create(c, $"The stride must be between 1 and the window ({effective}), got {stride}."));
        if (BatchSize < 1)
            throw new ArgumentException(string.Create(c, $"The batch size must be at least 1, got {BatchSize}."));
        return this;
    }
}
