using System.Text;
using GpuTransformer.Training.Generation;
using GpuTransformer.Training.Scoring;

namespace GpuTransformer.Tests.Scoring;

/// <summary>
/// The scoring API on small random models: the window plan covers every token once with the
/// context the README promises; windowed scoring equals plain forwards of exactly the context
/// each token was given (the whole sequence when it fits), batched equals one at a time; the
/// summary follows from the tokens; attention comes from the scoring forward; bad input fails
/// with one clear message. Every backend present.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class ScoringTests(Devices devices)
{
    /// <summary>A byte-level model with a context of 16 (d_model 16, 2 heads, 2 layers).</summary>
    private static readonly LanguageModelConfig Config = new()
    {
        DModel = 16, NHead = 2, NumLayers = 2, DimFeedforward = 32, VocabularySize = 259, MaxSequenceLength = 16, PadId = 256,
    };

    private static readonly ByteTokenizer Bytes = new();

    [Fact]
    public void The_window_plan_scores_every_token_once_with_at_least_window_minus_stride_plus_one_tokens_of_context()
    {
        foreach (var length in new[] { 2, 3, 10, 11, 17, 40 })
        {
            foreach (var (window, stride) in new[] { (1, 1), (4, 2), (4, 4), (5, 3), (8, 1), (16, 8), (64, 32) })
            {
                var plan = ScoringWindows.Plan(length, window, stride);
                var scored = plan.SelectMany(w => Enumerable.Range(w.FirstTarget, w.LastTarget - w.FirstTarget + 1)).ToList();
                Assert.Equal(Enumerable.Range(1, length - 1), scored);
                Assert.All(plan, w => Assert.InRange(w.Length, 1, window));
                Assert.All(plan, w => Assert.InRange(w.Start, 0, length - 2));
                Assert.Equal(length - 1, plan[^1].LastTarget);
                Assert.Equal(length - 1 <= window ? 1 : plan.Count, plan.Count);
                foreach (var w in plan)
                {
                    for (var target = w.FirstTarget; target <= w.LastTarget; target++)
                        Assert.InRange(w.ContextOf(target), Math.Min(target, window - stride + 1), window);
                }
            }
        }
        // The README's example: 10 tokens after the separator, window 4, stride 2.
        Assert.Equal(
            [new ScoringWindow(0, 4, 1), new ScoringWindow(2, 4, 5), new ScoringWindow(4, 4, 7), new ScoringWindow(6, 4, 9)],
            ScoringWindows.Plan(11, 4, 2));
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Windowed_scoring_equals_plain_forwards_of_each_tokens_context(string backend)
    {
        using var model = new LanguageModel(devices.Get(backend), Config, seed: 11);
        var random = new Random(5);
        int[][] sequences = [.. new[] { 9, 14, 17, 26 }.Select(n => Enumerable.Range(0, n).Select(_ => random.Next(0, 256)).ToArray())];
        var scorer = new LanguageModelScorer(model, Bytes);

        // Fits the context: one window, exactly the logits of one forward of the whole sequence.
        var fitting = sequences.Where(s => s.Length - 1 <= Config.MaxSequenceLength).ToList();
        var whole = scorer.ScoreIds(fitting);
        for (var i = 0; i < fitting.Count; i++)
        {
            Assert.Equal(1, whole[i].Windows);
            var expected = ReferenceLogProbabilities(model, fitting[i], 0, fitting[i].Length - 1);
            Assert.All(whole[i].Tokens, t => Assert.Equal(expected[t.Position - 1], t.LogProbability, 5));
            Assert.All(whole[i].Tokens, t => Assert.Equal(t.Position, t.Context));
        }

        // Windows smaller than the text: each token equals a forward of the context the plan gave it.
        foreach (var (window, stride) in new[] { (6, 4), (16, 8) })
        {
            var options = new ScoringOptions { Window = window, Stride = stride, BatchSize = 3 };
            var scores = scorer.ScoreIds(sequences, options);
            for (var i = 0; i < sequences.Length; i++)
            {
                Assert.Equal(ScoringWindows.Plan(sequences[i].Length, window, stride).Count, scores[i].Windows);
                foreach (var group in scores[i].Tokens.GroupBy(t => t.Position - t.Context))
                {
                    var start = group.Key;
                    var expected = ReferenceLogProbabilities(model, sequences[i], start, group.Max(t => t.Position) - start);
                    Assert.All(group, t => Assert.Equal(expected[t.Position - start - 1], t.LogProbability, 5));
                }
            }
            // Batched windows (padded on the right) score as one at a time.
            var single = scorer.ScoreIds(sequences, options with { BatchSize = 1 });
            for (var i = 0; i < sequences.Length; i++)
                Assert.Equal(single[i].Tokens.Select(t => t.LogProbability), scores[i].Tokens.Select(t => t.LogProbability), (a, b) => Math.Abs(a - b) <= 1e-5);
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void A_text_is_scored_after_the_separator_and_summarised_by_the_chain_rule(string backend)
    {
        using var model = new LanguageModel(devices.Get(backend), Config, seed: 3);
        var scorer = new LanguageModelScorer(model, Bytes);
        const string text = "Hé, union!";
        var score = scorer.Score(text, new ScoringOptions { TopK = 4, ScoreEndOfText = true });

        var bytes = Encoding.UTF8.GetBytes(text);
        Assert.Equal([Bytes.Specials.Eos, .. bytes.Select(b => (int)b), Bytes.Specials.Eos], score.Ids);
        Assert.Equal(bytes.Length + 1, score.Tokens.Count);
        Assert.Equal(text, score.Text);
        var total = score.Tokens.Sum(t => t.LogProbability);
        Assert.Equal(total, score.TotalLogProbability, 12);
        Assert.Equal(total / score.Tokens.Count, score.MeanLogProbability, 12);
        Assert.Equal(Math.Exp(-total / score.Tokens.Count), score.Perplexity, 9);
        Assert.Equal(-total / Math.Log(2) / bytes.Length, score.BitsPerByte!.Value, 9);
        Assert.Equal(-total / Math.Log(2) / text.Length, score.BitsPerCharacter!.Value, 9);
        foreach (var token in score.Tokens)
        {
            Assert.Equal(4, token.TopK.Count);
            Assert.True(token.TopK.Zip(token.TopK.Skip(1)).All(p => p.First.Probability >= p.Second.Probability), "top-k sorted");
            Assert.Equal(token.Rank <= 4, token.TopK.Any(c => c.Id == token.Id));
            if (token.Rank <= 4)
                Assert.Equal(token.Id, token.TopK[token.Rank - 1].Id);
            Assert.InRange(token.Entropy, 0, Math.Log(Config.VocabularySize) + 1e-9);
            Assert.Equal(Bytes.TokenText(token.Id), token.Text);
        }
        // The same text among others, in one batch, scores the same; the text API is the id API after the separator.
        var batch = scorer.Score(["x", text, "a longer text than the window"], new ScoringOptions { TopK = 4, ScoreEndOfText = true });
        Assert.Equal(score.Tokens.Select(t => t.LogProbability), batch[1].Tokens.Select(t => t.LogProbability), (a, b) => Math.Abs(a - b) <= 1e-5);
        var byIds = scorer.ScoreIds([[.. score.Ids]], new ScoringOptions { TopK = 4 })[0];
        Assert.Equal(score.Tokens.Select(t => t.LogProbability), byIds.Tokens.Select(t => t.LogProbability), (a, b) => Math.Abs(a - b) <= 1e-5);
        Assert.Null(byIds.BitsPerByte);
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Attention_comes_from_the_forward_that_scored_the_text(string backend)
    {
        using var model = new LanguageModel(devices.Get(backend), Config, seed: 4);
        var scorer = new LanguageModelScorer(model, Bytes);
        var score = scorer.Score("attend");
        var maps = scorer.Attention(score);
        Assert.Equal(Config.NumLayers, maps.Count);
        foreach (var map in maps)
        {
            Assert.Equal(score.Ids.Count - 1, map.Queries);
            Assert.Equal(["<eos>", "a", "t", "t", "e", "n"], map.QueryLabels);
            for (var h = 0; h < Config.NHead; h++)
            {
                for (var q = 0; q < map.Queries; q++)
                {
                    Assert.Equal(1.0, Enumerable.Range(0, q + 1).Sum(k => (double)map[h, q, k]), 4);
                    Assert.All(Enumerable.Range(q + 1, map.Keys - q - 1), k => Assert.Equal(0f, map[h, q, k]));
                }
            }
        }
        var windowed = scorer.Score("a text longer than four", new ScoringOptions { Window = 4 });
        var error = Assert.Throws<ArgumentException>(() => scorer.Attention(windowed));
        Assert.True(windowed.Windows > 1);
        Assert.Contains($"took {windowed.Windows} windows", error.Message);
    }

    [Fact]
    public void Bad_input_is_one_clear_error_before_any_forward()
    {
        using var model = new LanguageModel(devices.Get("cpu"), Config);
        var scorer = new LanguageModelScorer(model, Bytes);
        void Fails(Action act, string expected) => Assert.Contains(expected, Assert.ThrowsAny<ArgumentException>(act).Message);

        Fails(() => scorer.Score(""), "The text \"\" is empty: there is nothing to score.");
        Fails(() => scorer.Score(["fine", ""]), "Text 2 (\"\") is empty");
        Fails(() => scorer.Score("x", new ScoringOptions { TopK = 0 }), "Top-k must be between 1 and the model's vocabulary of 259 ids, got 0.");
        Fails(() => scorer.Score("x", new ScoringOptions { TopK = 260 }), "got 260");
        Fails(() => scorer.Score("x", new ScoringOptions { Window = 17 }), "A window of 17 tokens is larger than the model's context (max_seq_len 16).");
        Fails(() => scorer.Score("x", new ScoringOptions { Window = 0 }), "The window must be at least 1 token");
        Fails(() => scorer.Score("x", new ScoringOptions { Window = 4, Stride = 5 }), "The stride must be between 1 and the window (4), got 5.");
        Fails(() => scorer.Score("x", new ScoringOptions { BatchSize = 0 }), "The batch size must be at least 1");
        Fails(() => scorer.Score("x", new ScoringOptions { StartWithSeparator = false }), "is one token");
        Fails(() => scorer.ScoreIds([[1, 2], [3]]), "Sequence 2 has 1 ids");
        Fails(() => scorer.ScoreIds([[1, 300]]), "sequence 1");
        Assert.Throws<InvalidOperationException>(() => new LanguageModelScorer(model).Score("x"));

        var words = new WordTokenizer(["the", "union"]);
        using var wordModel = new LanguageModel(devices.Get("cpu"), Config with { VocabularySize = words.VocabularySize, PadId = 0 });
        Fails(() => new LanguageModelScorer(wordModel, words).Score("the zebra union"),
            "The text \"the zebra union\" has 'zebra', which the word tokenizer cannot encode: it would be <unk>");
        Fails(() => _ = new LanguageModelScorer(wordModel, Bytes), "The tokenizer has 259 ids but the model's vocabulary is 6");

        // A checkpoint of the wrong kind: the encoder–decoder golden file is no language model.
        var golden = ParitySpec.Load("transformer_post_relu");
        var wrongKind = Assert.Throws<InvalidDataException>(() => ModelCheckpoint.LoadLanguageModel(devices.Get("cpu"), golden));
        Assert.Contains("holds a 'transformer' model, not a 'language_model'", wrongKind.Message);

        using var transformer = new Transformer(devices.Get("cpu"), new TransformerConfig
        {
            DModel = 8, NHead = 2, NumEncoderLayers = 1, NumDecoderLayers = 1, DimFeedforward = 8, SourceVocabularySize = 9, TargetVocabularySize = 7, MaxSequenceLength = 4, PadId = 0,
        });
        var translations = new TranslationScorer(transformer, 1, 2, id => $"s{id}", id => $"t{id}");
        Fails(() => translations.Score([new SequencePair([3], [3, 4, 5, 6])]), "Pair 1 has a source of 1 and a target of 4 tokens; the model takes 4 positions");
        Fails(() => translations.Score([new SequencePair([3, 0], [3])]), "Pair 1 contains pad_id 0");
        Fails(() => translations.Score([new SequencePair([], [3])]), "missing or empty source");
        Fails(() => translations.Score([new SequencePair([3], [9])]), "target 1");
        Fails(() => translations.Score([new SequencePair([3], [3])], new ScoringOptions { TopK = 8 }), "vocabulary of 7 ids");
    }

    /// <summary>
    /// ln P(sequence[t] | sequence[start … t)) for t = start + 1 … start + count, from one plain
    /// forward of sequence[start … start + count) (one row, no padding), in double.
    /// </summary>
    private static double[] ReferenceLogProbabilities(LanguageModel model, int[] sequence, int start, int count)
    {
        model.Training = false;
        var logits = model.Forward(new TokenIds(sequence.AsSpan(start, count).ToArray(), 1, count)).ToArray();   // [1, count, V]
        var v = Config.VocabularySize;
        var result = new double[count];
        var row = new double[v];
        for (var p = 0; p < count; p++)
        {
            Sampling.LogSoftmax(logits.AsSpan(p * v, v), row);
            result[p] = row[sequence[start + p + 1]];
        }
        return result;
    }
}
