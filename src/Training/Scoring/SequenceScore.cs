using System.Text;

namespace GpuTransformer.Training.Scoring;

/// <summary>One candidate for the next token: its id, text and probability.</summary>
public sealed record TokenCandidate(int Id, string Text, double Probability);

/// <summary>
/// One scored token: how likely the model found it given every token before it (in its window).
/// </summary>
/// <param name="Position">Its index in <see cref="SequenceScore.Ids"/> (≥ 1: token 0 is context).</param>
/// <param name="Id">The token id.</param>
/// <param name="Text">The token as the vocabulary spells it.</param>
/// <param name="LogProbability">ln P(token | tokens before it), nats (−cross-entropy of the logits).</param>
/// <param name="Rank">1 + the number of ids the model found strictly more likely.</param>
/// <param name="Entropy">Entropy of the whole next-token distribution at this position, nats.</param>
/// <param name="TopK">The k most likely next tokens, most likely first (ties by id); the actual one is among them when its rank ≤ k.</param>
/// <param name="Context">Tokens the model saw before predicting it (fewer than <see cref="Position"/> when a sliding window cut the start).</param>
public sealed record TokenScore(int Position, int Id, string Text, double LogProbability, int Rank, double Entropy, IReadOnlyList<TokenCandidate> TopK, int Context)
{
    /// <summary>P(token | tokens before it).</summary>
    public double Probability => Math.Exp(LogProbability);
}

/// <summary>
/// A scored sequence: per token its <see cref="TokenScore"/>, and by the chain rule
/// ln P(w₁ … wₙ) = Σ ln P(wᵢ | w₁ … wᵢ₋₁) over the scored tokens.
/// </summary>
/// <param name="Text">The text scored (null when ids were given).</param>
/// <param name="Ids">The whole sequence: token 0 is context (the &lt;eos&gt; separator, &lt;bos&gt; for a translation, or the text's first token), token j ≥ 1 is <see cref="Tokens"/>[j − 1].</param>
/// <param name="Tokens">One entry per token 1 … Ids.Count − 1.</param>
/// <param name="Windows">Forwards the sequence took (1 unless it was longer than the window).</param>
/// <param name="Source">The source ids, for log P(target | source) of an encoder–decoder; null for a language model.</param>
/// <param name="SourceTokens">The source tokens as text (labels), with <paramref name="Source"/>.</param>
public sealed record SequenceScore(
    string? Text, IReadOnlyList<int> Ids, IReadOnlyList<TokenScore> Tokens, int Windows,
    IReadOnlyList<int>? Source = null, IReadOnlyList<string>? SourceTokens = null)
{
    /// <summary>ln P of the whole sequence given token 0 (and the source): the sum of the tokens' log-probabilities, nats.</summary>
    public double TotalLogProbability => Tokens.Sum(t => t.LogProbability);

    /// <summary>P of the whole sequence (underflows to 0 for long texts; compare <see cref="TotalLogProbability"/>).</summary>
    public double Probability => Math.Exp(TotalLogProbability);

    /// <summary>The mean log-probability per scored token, nats (−the cross-entropy loss).</summary>
    public double MeanLogProbability => TotalLogProbability / Tokens.Count;

    /// <summary>exp(−mean log-probability).</summary>
    public double Perplexity => Math.Exp(-MeanLogProbability);

    /// <summary>−log₂ P of the whole sequence: the bits an ideal coder driven by the model would spend.</summary>
    public double TotalBits => -TotalLogProbability / Math.Log(2);

    /// <summary>Bits per UTF-8 byte of <see cref="Text"/> (null without a text).</summary>
    public double? BitsPerByte => Text is null ? null : TotalBits / Math.Max(1, Encoding.UTF8.GetByteCount(Text));

    /// <summary>Bits per character (Unicode scalar) of <see cref="Text"/> (null without a text).</summary>
    public double? BitsPerCharacter => Text is null ? null : TotalBits / Math.Max(1, Text.EnumerateRunes().Count());
}
