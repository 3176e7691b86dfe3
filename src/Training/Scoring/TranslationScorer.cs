using System.Globalization;
using GpuTransformer.Layers;
using GpuTransformer.Training.Data;
using GpuTransformer.Training.Inspection;

namespace GpuTransformer.Training.Scoring;

/// <summary>
/// log P(target | source) with an encoder–decoder <see cref="Transformer"/>: teacher-forced, the
/// decoder reads &lt;bos&gt; y₁ … yₙ and each position's distribution scores the next token of
/// y₁ … yₙ &lt;eos&gt; (the &lt;eos&gt; included: a translation ends there). Scoring several
/// candidate targets for one source ranks candidate translations. Pairs are batched
/// (<see cref="ScoringOptions.BatchSize"/> per forward, padded with pad_id, which the model
/// masks; one pair per forward when the model has no pad_id). Every check runs before the first
/// forward; the model runs in evaluation mode and is left in the mode it was in. Not owned.
/// </summary>
/// <param name="model">The model.</param>
/// <param name="bosId">The decoder's start token.</param>
/// <param name="eosId">The end token every target is scored with.</param>
/// <param name="sourceText">A source id's text (labels).</param>
/// <param name="targetText">A target id's text (labels).</param>
public sealed class TranslationScorer(Transformer model, int bosId, int eosId, Func<int, string> sourceText, Func<int, string> targetText)
{
    /// <summary>The model.</summary>
    public Transformer Model { get; } = model ?? throw new ArgumentNullException(nameof(model));

    /// <summary>
    /// Scores each pair's target given its source; <paramref name="texts"/> (one per pair, or null)
    /// are the targets as text, for <see cref="SequenceScore.Text"/> and bits per byte.
    /// </summary>
    /// <exception cref="ArgumentException">No pairs, an empty or too long source, a target that does not fit max_seq_len with &lt;bos&gt;, ids outside a vocabulary or equal to pad_id, texts not one per pair, or bad options; before anything runs.</exception>
    public IReadOnlyList<SequenceScore> Score(IReadOnlyList<SequencePair> pairs, ScoringOptions? options = null, IReadOnlyList<string>? texts = null)
    {
        ArgumentNullException.ThrowIfNull(pairs);
        var config = Model.Config;
        options = (options ?? new ScoringOptions()).Validate(config.TargetVocabularySize, config.MaxSequenceLength);
        if (pairs.Count == 0)
            throw new ArgumentException("No pairs to score.", nameof(pairs));
        if (texts is not null && texts.Count != pairs.Count)
            throw new ArgumentException($"{texts.Count} texts for {pairs.Count} pairs.", nameof(texts));
        var c = CultureInfo.InvariantCulture;
        for (var i = 0; i < pairs.Count; i++)
        {
            var (source, target) = pairs[i];
            if (source is null || target is null || source.Length == 0)
                throw new ArgumentException(string.Create(c, $"Pair {i + 1} has a missing or empty source or a missing target."), nameof(pairs));
            if (source.Length > config.MaxSequenceLength || target.Length + 1 > config.MaxSequenceLength)
                throw new ArgumentException(string.Create(c, $"Pair {i + 1} has a source of {source.Length} and a target of {target.Length} tokens; the model takes {config.MaxSequenceLength} positions (the target one fewer, for <bos>)."), nameof(pairs));
            new TokenIds(source, 1, source.Length).RequireInVocabulary(config.SourceVocabularySize, string.Create(c, $"source {i + 1}"));
            new TokenIds(target, 1, target.Length).RequireInVocabulary(config.TargetVocabularySize, string.Create(c, $"target {i + 1}"));
            if (config.PadId >= 0 && (source.Contains(config.PadId) || target.Contains(config.PadId)))
                throw new ArgumentException(string.Create(c, $"Pair {i + 1} contains pad_id {config.PadId}, which the model masks."), nameof(pairs));
        }

        var distribution = new NextTokenDistribution(config.TargetVocabularySize, options.TopK, targetText);
        var v = config.TargetVocabularySize;
        var results = new List<SequenceScore>(pairs.Count);
        using (Model.EvaluationMode())
        {
            foreach (var chunk in pairs.Chunk(config.PadId >= 0 ? options.BatchSize : 1))
            {
                var batch = Seq2SeqBatch.Create(chunk, config.PadId, bosId, eosId);
                var (b, s, t) = (batch.BatchSize, batch.SourceLength, batch.TargetLength);
                var logits = Model.Forward(new TokenIds(batch.Source, b, s), new TokenIds(batch.TargetInput, b, t)).ToArray();   // [B, T, V_tgt]
                for (var row = 0; row < b; row++)
                {
                    var n = batch.TargetLengths[row];                                      // target + <eos>
                    var tokens = new TokenScore[n];
                    for (var j = 0; j < n; j++)
                        tokens[j] = distribution.Score(logits.AsSpan(((row * t) + j) * v, v), batch.TargetOutput[(row * t) + j], j + 1, j + 1);
                    var (source, target) = chunk[row];
                    var index = results.Count;
                    results.Add(new SequenceScore(texts?[index], [bosId, .. target, eosId], tokens, 1, source, [.. source.Select(sourceText)]));
                }
            }
        }
        return results;
    }

    /// <summary>
    /// Encoder self-attention, decoder self-attention and cross-attention of every layer in the
    /// forward that scored <paramref name="score"/>: decoder query row j is the position whose
    /// logits predicted <see cref="SequenceScore.Tokens"/>[j].
    /// </summary>
    /// <exception cref="ArgumentException">A language model's score (no source).</exception>
    public IReadOnlyList<AttentionMap> Attention(SequenceScore score)
    {
        ArgumentNullException.ThrowIfNull(score);
        var source = score.Source ?? throw new ArgumentException("This is a language model's score: use LanguageModelScorer.Attention.", nameof(score));
        int[] targetInput = [.. score.Ids.Take(score.Ids.Count - 1)];
        return AttentionMaps.ForTransformer(Model, [[.. source]], [targetInput], 0, sourceText, targetText);
    }
}
