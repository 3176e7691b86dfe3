using System.Globalization;
using GpuTransformer.Layers;
using GpuTransformer.Training.Inspection;
using GpuTransformer.Training.Tokenizers;

namespace GpuTransformer.Training.Scoring;

/// <summary>
/// Scores texts with a decoder-only <see cref="LanguageModel"/>: per position the next-token
/// distribution the model predicts (the actual token's log-probability and rank, the entropy, the
/// top k), and the probability of the whole text by the chain rule. A text is encoded, preceded by
/// the &lt;eos&gt; separator the corpus streams put before every document (so its first token is
/// scored too), and run in windows (<see cref="ScoringWindows"/>: one window when it fits); the
/// windows of every text are batched, <see cref="ScoringOptions.BatchSize"/> per forward, padded
/// on the right (padding never reaches a real position: attention is causal and padded keys are
/// masked). Every check — empty texts, text the tokenizer cannot encode, options that do not fit
/// the model — runs before the first forward. The model runs in evaluation mode (no dropout) and
/// is left in the mode it was in. Not owned.
/// </summary>
public sealed class LanguageModelScorer
{
    /// <param name="model">The model.</param>
    /// <param name="tokenizer">Its tokenizer; without one only <see cref="ScoreIds"/> works (tokens are labelled <c>&lt;id N&gt;</c>).</param>
    /// <exception cref="ArgumentException">The tokenizer has more ids than the model's vocabulary.</exception>
    public LanguageModelScorer(LanguageModel model, ITokenizer? tokenizer = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (tokenizer is not null && tokenizer.VocabularySize > model.Config.VocabularySize)
            throw new ArgumentException($"The tokenizer has {tokenizer.VocabularySize} ids but the model's vocabulary is {model.Config.VocabularySize}: they do not belong together.", nameof(tokenizer));
        Model = model;
        Tokenizer = tokenizer;
    }

    /// <summary>The model.</summary>
    public LanguageModel Model { get; }

    /// <summary>The tokenizer, if any.</summary>
    public ITokenizer? Tokenizer { get; }

    /// <summary>A token's text for labels (ids the tokenizer does not know, in a larger model vocabulary, read <c>&lt;id N&gt;</c>).</summary>
    public string TokenText(int id) => Tokenizer is { } tokenizer && id < tokenizer.VocabularySize
        ? tokenizer.TokenText(id)
        : string.Create(CultureInfo.InvariantCulture, $"<id {id}>");

    /// <summary>
    /// The sequences <see cref="Score(IReadOnlyList{string}, ScoringOptions?)"/> scores:
    /// [&lt;eos&gt; separator,] the text's ids[, &lt;eos&gt;]. Checks every text first.
    /// </summary>
    /// <exception cref="ArgumentException">An empty text, one with characters the tokenizer cannot encode (they would be &lt;unk&gt;), or one with nothing to score.</exception>
    public static int[][] Encode(ITokenizer tokenizer, IReadOnlyList<string> texts, ScoringOptions options)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(texts);
        ArgumentNullException.ThrowIfNull(options);
        if (texts.Count == 0)
            throw new ArgumentException("No texts to score.", nameof(texts));
        var eos = tokenizer.Specials.Eos;
        var sequences = new int[texts.Count][];
        for (var i = 0; i < texts.Count; i++)
        {
            var text = texts[i] ?? throw new ArgumentException($"Text {i + 1} is null.", nameof(texts));
            if (text.Length == 0)
                throw new ArgumentException($"{Name(i, texts.Count, text)} is empty: there is nothing to score.", nameof(texts));
            var ids = tokenizer.Encode(text);
            if (tokenizer.Specials.Unk is { } unk && Array.IndexOf(ids, unk) is var at and >= 0)
            {
                throw new ArgumentException(
                    $"{Name(i, texts.Count, text)} has {Unencodable(tokenizer, text, unk, at, ids.Length)}, which the {tokenizer.Name} tokenizer cannot encode: " +
                    "it would be <unk>, and the probability of <unk> says nothing about the text.", nameof(texts));
            }
            var end = options.ScoreEndOfText && (ids.Length == 0 || ids[^1] != eos);
            int[] sequence = [.. options.StartWithSeparator ? [eos] : Array.Empty<int>(), .. ids, .. end ? [eos] : Array.Empty<int>()];
            if (sequence.Length < 2)
                throw new ArgumentException($"{Name(i, texts.Count, text)} is one token, which is only context without the separator: there is nothing to score.", nameof(texts));
            sequences[i] = sequence;
        }
        return sequences;
    }

    /// <summary>Scores each text (see the class summary).</summary>
    /// <exception cref="InvalidOperationException">The scorer has no tokenizer.</exception>
    /// <exception cref="ArgumentException">A text or option that does not fit (<see cref="Encode"/>, <see cref="ScoringOptions.Validate"/>), before anything runs.</exception>
    public IReadOnlyList<SequenceScore> Score(IReadOnlyList<string> texts, ScoringOptions? options = null)
    {
        var tokenizer = Tokenizer ?? throw new InvalidOperationException("Scoring text needs the model's tokenizer; without one, score ids (ScoreIds).");
        options = (options ?? new ScoringOptions()).Validate(Model.Config.VocabularySize, Model.Config.MaxSequenceLength);
        return Run(Encode(tokenizer, texts, options), texts, options);
    }

    /// <summary>Scores one text.</summary>
    public SequenceScore Score(string text, ScoringOptions? options = null) => Score([text], options)[0];

    /// <summary>
    /// Scores id sequences as given: token 0 of each is context, tokens 1 … n − 1 are scored
    /// (no separator is added).
    /// </summary>
    /// <exception cref="ArgumentException">A sequence of fewer than 2 ids or an id outside the model's vocabulary (named with its position), or bad options; before anything runs.</exception>
    public IReadOnlyList<SequenceScore> ScoreIds(IReadOnlyList<int[]> sequences, ScoringOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(sequences);
        options = (options ?? new ScoringOptions()).Validate(Model.Config.VocabularySize, Model.Config.MaxSequenceLength);
        if (sequences.Count == 0)
            throw new ArgumentException("No sequences to score.", nameof(sequences));
        for (var i = 0; i < sequences.Count; i++)
        {
            var sequence = sequences[i];
            if (sequence is null || sequence.Length < 2)
                throw new ArgumentException($"Sequence {i + 1} has {sequence?.Length ?? 0} ids; scoring needs a context token and at least one more.", nameof(sequences));
            new TokenIds(sequence, 1, sequence.Length).RequireInVocabulary(Model.Config.VocabularySize, string.Create(CultureInfo.InvariantCulture, $"sequence {i + 1}"));
        }
        return Run([.. sequences], null, options);
    }

    /// <summary>
    /// The attention of every layer and head in the forward that scored <paramref name="score"/>
    /// (one window): queries and keys are its tokens 0 … n − 2, and query row j is the position
    /// whose logits predicted <see cref="SequenceScore.Tokens"/>[j].
    /// </summary>
    /// <exception cref="ArgumentException">A translation's score, or one that took more than one window.</exception>
    public IReadOnlyList<AttentionMap> Attention(SequenceScore score)
    {
        ArgumentNullException.ThrowIfNull(score);
        if (score.Source is not null)
            throw new ArgumentException("This is an encoder–decoder's score: use TranslationScorer.Attention.", nameof(score));
        if (score.Windows != 1 || score.Ids.Count - 1 > Model.Config.MaxSequenceLength)
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture,
                $"The attention view shows one forward, but this text took {score.Windows} windows: score a text of at most {Model.Config.MaxSequenceLength} tokens in one window."), nameof(score));
        var input = score.Ids.Take(score.Ids.Count - 1).ToArray();
        return AttentionMaps.ForLanguageModel(Model, input, [.. input.Select(TokenText)]);
    }

    private IReadOnlyList<SequenceScore> Run(int[][] sequences, IReadOnlyList<string>? texts, ScoringOptions options)
    {
        var config = Model.Config;
        var window = options.WindowFor(config.MaxSequenceLength);
        var stride = options.StrideFor(config.MaxSequenceLength);
        var plans = sequences.Select(s => ScoringWindows.Plan(s.Length, window, stride)).ToArray();
        var rows = plans.SelectMany((plan, s) => plan.Select(w => (Sequence: s, Window: w))).ToList();
        var scores = sequences.Select(s => new TokenScore[s.Length - 1]).ToArray();
        var distribution = new NextTokenDistribution(config.VocabularySize, options.TopK, TokenText);
        var padValue = config.PadId >= 0 ? config.PadId : 0;
        var v = config.VocabularySize;

        using (Model.EvaluationMode())
        {
            foreach (var batch in rows.Chunk(options.BatchSize))
            {
                var t = batch.Max(r => r.Window.Length);
                var ids = new int[batch.Length * t];
                var padding = new int[batch.Length * t];                      // 1 = padded key [B, T]
                Array.Fill(ids, padValue);
                for (var b = 0; b < batch.Length; b++)
                {
                    var (s, w) = batch[b];
                    sequences[s].AsSpan(w.Start, w.Length).CopyTo(ids.AsSpan(b * t));
                    padding.AsSpan((b * t) + w.Length, t - w.Length).Fill(1);
                }
                var logits = Model.Forward(new TokenIds(ids, batch.Length, t), padding).ToArray();   // [B, T, V]
                for (var b = 0; b < batch.Length; b++)
                {
                    var (s, w) = batch[b];
                    for (var target = w.FirstTarget; target <= w.LastTarget; target++)
                    {
                        var row = logits.AsSpan(((b * t) + target - w.Start - 1) * v, v);    // position target − 1 predicts target
                        scores[s][target - 1] = distribution.Score(row, sequences[s][target], target, w.ContextOf(target));
                    }
                }
            }
        }
        return [.. sequences.Select((sequence, s) => new SequenceScore(texts?[s], sequence, scores[s], plans[s].Count))];
    }

    private static string Name(int index, int count, string text)
    {
        var shown = text.Length <= 40 ? text : text[..39] + "…";
        return count == 1 ? $"The text \"{shown}\"" : $"Text {index + 1} (\"{shown}\")";
    }

    /// <summary>The first word whose ids contain &lt;unk&gt;, or else the token position.</summary>
    private static string Unencodable(ITokenizer tokenizer, string text, int unk, int position, int count)
    {
        foreach (var word in text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries))
        {
            // A BPE piece may be known with a leading space and not without (or the reverse): name a word only when both fail.
            if (tokenizer.Encode(word).Contains(unk) && tokenizer.Encode(" " + word).Contains(unk))
                return $"'{word}'";
        }
        return string.Create(CultureInfo.InvariantCulture, $"a part (token {position + 1} of {count})");
    }
}
