using GpuTransformer.Training.Generation;

namespace GpuTransformer.Tests.Generation;

/// <summary>
/// Generation with the key/value cache against full-prefix recomputation on small random
/// models, on every backend present: the same tokens (greedy) and logits within 1e-5; one
/// position per step with the cache (from the generator's trace and from the attention layer's
/// own last shape); the sliding window and the refusal; beam search through the cache (with
/// reordering) against beam search that recomputes every prefix.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class CachedDecodingTests(Devices devices)
{
    private const double Atol = 1e-5, Rtol = 1e-5;

    private static readonly LanguageModelConfig Lm = new()
    {
        DModel = 16, NHead = 2, NumLayers = 2, DimFeedforward = 24, Dropout = 0.1f, Activation = "gelu_tanh",
        VocabularySize = 13, MaxSequenceLength = 12, TieWeights = true, PadId = 0,
    };

    private static readonly TransformerConfig Seq2Seq = new()
    {
        DModel = 16, NHead = 2, NumEncoderLayers = 1, NumDecoderLayers = 2, DimFeedforward = 24, Dropout = 0.1f,
        SourceVocabularySize = 9, TargetVocabularySize = 10, MaxSequenceLength = 10, PadId = 0,
    };

    // Ids 0 pad, 1 bos, 2 eos as in the task vocabularies.
    private static readonly int[] Banned = [0, 1];

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Cached_greedy_generation_equals_full_prefix_recomputation(string backend)
    {
        using var model = new LanguageModel(devices.Get(backend), Lm, seed: 3);
        int[] context = [2, 5, 7, 3];
        var options = new GenerationOptions { MaxTokens = 7, Sampling = new SamplingOptions { Greedy = true }, StopAtEos = false, RecordLogits = true };
        var cached = LanguageModelGenerator.GenerateIds(model, context, options, banned: Banned);
        var full = LanguageModelGenerator.GenerateIds(model, context, options with { UseCache = false }, banned: Banned);

        Assert.Equal(full.Ids, cached.Ids);
        Assert.Equal(7, cached.Ids.Length);
        for (var i = 0; i < 7; i++)
            TestTensors.AssertClose(full.Logits![i], cached.Logits![i], Atol, Rtol, $"{backend}: logits of token {i}");
        Assert.True(model.Training, "the generator restores the model's mode");

        // Cost per token: the prefill runs the 4 context positions once, then each step 1 position
        // against one more key; without the cache every step reruns the whole prefix.
        Assert.Equal(new GenerationStep(4, 4), cached.Steps[0]);
        for (var i = 1; i < cached.Steps.Count; i++)
            Assert.Equal(new GenerationStep(1, 4 + i), cached.Steps[i]);
        Assert.Equal(Enumerable.Range(4, 7).Select(n => new GenerationStep(n, n)), full.Steps);
        // … and the attention layers themselves last attended with one query over all 10 keys
        // (after the uncached run: 10 queries over 10 keys).
        Assert.Equal(new AttentionShapeView(10, 10), AttentionShapeView.Of(model.Layers[0].SelfAttention));
        _ = LanguageModelGenerator.GenerateIds(model, context, options, banned: Banned);
        Assert.All(model.Layers, layer => Assert.Equal(new AttentionShapeView(1, 10), AttentionShapeView.Of(layer.SelfAttention)));
    }

    /// <summary>
    /// Greedy generation without recorded logits takes the argmax on the device and reads back
    /// only the id; with recorded logits it downloads the row and takes the host's argmax. Both
    /// give the same tokens, with the cache and without, through the sliding window (20 tokens
    /// with max_seq_len 12), banned ids excluded alike.
    /// </summary>
    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Greedy_on_the_device_picks_the_tokens_the_host_argmax_picks(string backend)
    {
        using var model = new LanguageModel(devices.Get(backend), Lm, seed: 5);
        int[] context = [2, 5, 7, 3];
        var options = new GenerationOptions { MaxTokens = 20, Sampling = new SamplingOptions { Greedy = true }, StopAtEos = false };
        foreach (var useCache in new[] { true, false })
        {
            var onDevice = LanguageModelGenerator.GenerateIds(model, context, options with { UseCache = useCache }, banned: Banned);
            var onHost = LanguageModelGenerator.GenerateIds(model, context, options with { UseCache = useCache, RecordLogits = true }, banned: Banned);
            Assert.Null(onDevice.Logits);
            Assert.Equal(onHost.Ids, onDevice.Ids);
            Assert.DoesNotContain(onDevice.Ids, id => Banned.Contains(id));
        }
    }

    /// <summary>
    /// The decoding fusions against the unfused training-mode path (dropout 0, so both compute
    /// the same function): token by token through the cache in evaluation mode, the activation in
    /// linear1's epilogue and the residual sums in the epilogues of out_proj and linear2, added in
    /// place. Logits within 1e-5; the post-LN layers keep the unfused path.
    /// </summary>
    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Evaluation_fusions_give_the_logits_of_the_unfused_training_path(string backend)
    {
        var device = devices.Get(backend);
        foreach (var normFirst in new[] { true, false })
        {
            using var model = new LanguageModel(device, Lm with { Dropout = 0f, NormFirst = normFirst }, seed: 7);
            var ids = new TokenIds(new[] { 2, 5, 7, 3, 9, 4 }, 1, 6);
            model.Training = true;
            var unfused = model.Forward(ids).ToArray();                     // [1, 6, V]
            model.Training = false;
            TestTensors.AssertClose(unfused, model.Forward(ids).ToArray(), Atol, Rtol, $"{backend} norm_first {normFirst}: evaluation forward");
            using var cache = model.CreateCache(1, 6);
            var v = Lm.VocabularySize;
            for (var t = 0; t < 6; t++)
            {
                var logits = model.ForwardIncremental(new TokenIds(new[] { ids[0, t] }, 1, 1), cache).ToArray();
                TestTensors.AssertClose(unfused.AsSpan(t * v, v), logits, Atol, Rtol, $"{backend} norm_first {normFirst}: cached step {t}");
            }
        }
    }

    private readonly record struct AttentionShapeView(int Queries, int Keys)
    {
        public static AttentionShapeView Of(MultiHeadAttention attention)
        {
            var shape = attention.LastAttentionShape ?? throw new InvalidOperationException("no attention ran");
            return new AttentionShapeView(shape.QueryLength, shape.KeyLength);
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Probabilities_of_a_cached_step_are_read_while_the_cache_lives_and_refused_once_it_is_disposed(string backend)
    {
        var device = devices.Get(backend);
        using var model = new LanguageModel(device, Lm, seed: 3);
        model.Training = false;
        var ids = new TokenIds(new[] { 2, 5, 7, 3 }, 1, 4);
        model.Forward(ids);
        var full = model.Layers[1].SelfAttention.LastProbabilities();              // [1, H, 4, 4]
        var cache = model.CreateCache(1, 8);
        model.ForwardIncremental(new TokenIds(new[] { 2, 5, 7 }, 1, 3), cache);
        model.ForwardIncremental(new TokenIds(new[] { 3 }, 1, 1), cache);
        var step = model.Layers[1].SelfAttention.LastProbabilities();              // [1, H, 1, 4]: the last row of the full map
        for (var h = 0; h < Lm.NHead; h++)
            TestTensors.AssertClose(full.AsSpan((h * 16) + 12, 4).ToArray(), step.AsSpan(h * 4, 4).ToArray(), Atol, Rtol, $"{backend}: head {h}, cached step");
        cache.Dispose();
        var error = Assert.Throws<InvalidOperationException>(() => model.Layers[1].SelfAttention.LastProbabilities());
        Assert.Contains("disposed", error.Message);
        model.Forward(ids);                                                         // a whole-sequence forward reads the layer's own buffers again
        TestTensors.AssertClose(full, model.Layers[1].SelfAttention.LastProbabilities(), Atol, Rtol, $"{backend}: after the cache");

        // The decoder's cross-attention reads the memory's keys and values from the cache too.
        using var transformer = new Transformer(device, Seq2Seq, seed: 4);
        transformer.Training = false;
        var decoding = transformer.StartDecoding(new TokenIds(new[] { 3, 5, 7 }, 1, 3), maxTargetLength: 4);
        transformer.DecodeIncremental(new TokenIds(new[] { 1 }, 1, 1), decoding);
        var cross = transformer.Decoder.Layers[0].CrossAttention.LastProbabilities(); // [1, H, 1, 3]
        Assert.All(Enumerable.Range(0, Seq2Seq.NHead), h => Assert.Equal(1, cross.AsSpan(h * 3, 3).ToArray().Sum(), 5));
        decoding.Dispose();
        error = Assert.Throws<InvalidOperationException>(() => transformer.Decoder.Layers[0].CrossAttention.LastProbabilities());
        Assert.Contains("disposed", error.Message);
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Sliding_window_keeps_the_context_within_max_seq_len_and_matches_recomputation(string backend)
    {
        var device = devices.Get(backend);
        using var model = new LanguageModel(device, Lm, seed: 5);
        int[] context = [2, 4, 6];
        var options = new GenerationOptions { MaxTokens = 20, Sampling = new SamplingOptions { Greedy = true }, StopAtEos = false };
        var cached = LanguageModelGenerator.GenerateIds(model, context, options, banned: Banned);
        var full = LanguageModelGenerator.GenerateIds(model, context, options with { UseCache = false }, banned: Banned);
        Assert.Equal(20, cached.Ids.Length);
        Assert.Equal(full.Ids, cached.Ids);
        Assert.All(cached.Steps, s => Assert.InRange(s.KeyPositions, 1, Lm.MaxSequenceLength));
        // 3 + 20 − 1 = 22 positions through a window of 12: the window restarts with the last 6 tokens.
        var refills = cached.Steps.Skip(1).Where(s => s.NewPositions > 1).ToList();
        Assert.NotEmpty(refills);
        Assert.All(refills, s => Assert.Equal(new GenerationStep(6, 6), s));
        Assert.Equal(20, cached.Steps.Count);

        // A prompt longer than the window is cut to its last 6 tokens before the first step.
        var longPrompt = Enumerable.Range(0, 15).Select(i => 3 + (i % 9)).ToArray();
        var cut = LanguageModelGenerator.GenerateIds(model, longPrompt, options with { MaxTokens = 2 }, banned: Banned);
        Assert.Equal(new GenerationStep(6, 6), cut.Steps[0]);
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Refuse_policy_rejects_a_context_that_does_not_fit_before_running(string backend)
    {
        var device = devices.Get(backend);
        using var model = new LanguageModel(device, Lm);
        var options = new GenerationOptions { MaxTokens = 11, Overflow = ContextOverflow.Refuse };
        int[] context = [2, 3, 4];
        var error = Assert.Throws<ArgumentException>(() => LanguageModelGenerator.GenerateIds(model, context, options));
        Assert.Contains("need 13 positions", error.Message);
        Assert.Contains("max_seq_len 12", error.Message);
        // 3 + 10 − 1 = 12 fits exactly (the last token is never fed back).
        Assert.Equal(10, LanguageModelGenerator.GenerateIds(model, context, options with { MaxTokens = 10 }).Ids.Length);
        Assert.Throws<ArgumentException>(() => LanguageModelGenerator.GenerateIds(model, [], options));
        error = Assert.Throws<ArgumentException>(() => LanguageModelGenerator.GenerateIds(model, [2, 13, 4], options));
        Assert.Contains("Token id 13 at [0, 1]", error.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => LanguageModelGenerator.GenerateIds(model, [2], options with { MaxTokens = 0 }));
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Generation_stops_at_eos_and_seeded_sampling_repeats(string backend)
    {
        var device = devices.Get(backend);
        using var model = new LanguageModel(device, Lm, seed: 11);
        int[] context = [2, 9];
        var sampling = new GenerationOptions { MaxTokens = 12, Sampling = new SamplingOptions { Temperature = 1.5, TopK = 8, Seed = 17 }, StopAtEos = false };
        var first = LanguageModelGenerator.GenerateIds(model, context, sampling, banned: Banned);
        var again = LanguageModelGenerator.GenerateIds(model, context, sampling, banned: Banned);
        var other = LanguageModelGenerator.GenerateIds(model, context, sampling with { Sampling = sampling.Sampling with { Seed = 18 } }, banned: Banned);
        Assert.Equal(first.Ids, again.Ids);
        Assert.NotEqual(first.Ids, other.Ids);
        Assert.All(first.Ids, id => Assert.DoesNotContain(id, Banned));

        // Declare the third sampled token the end of sequence: generation stops right there.
        var eos = first.Ids[2];
        var stopped = LanguageModelGenerator.GenerateIds(model, context, sampling with { StopAtEos = true }, eosId: eos, banned: Banned);
        var firstEos = Array.IndexOf(first.Ids, eos);
        Assert.Equal(StopReason.EndOfSequence, stopped.Stop);
        Assert.Equal(first.Ids[..(firstEos + 1)], stopped.Ids);
        Assert.Equal(StopReason.MaxTokens, first.Stop);
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Generate_with_a_tokenizer_returns_the_decoded_continuation(string backend)
    {
        var device = devices.Get(backend);
        var tokenizer = new ByteTokenizer();
        using var model = new LanguageModel(device, Lm with { VocabularySize = tokenizer.VocabularySize, PadId = tokenizer.Specials.Pad, DModel = 8, NumLayers = 1 }, seed: 2);
        var options = new GenerationOptions { MaxTokens = 6, Sampling = new SamplingOptions { Seed = 4 } };
        var result = LanguageModelGenerator.Generate(model, tokenizer, "hi", options);
        Assert.Equal(new[] { tokenizer.Specials.Eos, 'h', 'i' }, result.ContextIds);
        Assert.InRange(result.GeneratedIds.Length, 1, 6);
        var kept = result.StopReason == StopReason.EndOfSequence ? result.GeneratedIds[..^1] : result.GeneratedIds;
        Assert.Equal(tokenizer.Decode(kept), result.Text);
        Assert.DoesNotContain(tokenizer.Specials.Pad, result.GeneratedIds);
        Assert.DoesNotContain(tokenizer.Specials.Bos, result.GeneratedIds);

        using var small = new LanguageModel(device, Lm);
        var error = Assert.Throws<ArgumentException>(() => LanguageModelGenerator.Generate(small, tokenizer, "hi", options));
        Assert.Contains("259 ids", error.Message);
    }

    // ------------------------------------------------------------------ encoder–decoder

    /// <summary>The reference scorer: every step runs the whole target prefix through <see cref="Transformer.Forward"/>.</summary>
    private sealed class RecomputingScorer(Transformer model, IReadOnlyList<int[]> sources, int copies, int maxSteps) : ISequenceScorer
    {
        private List<int>[] histories = [.. Enumerable.Range(0, sources.Count * copies).Select(_ => new List<int>())];

        public int Rows => sources.Count * copies;

        public int VocabularySize => model.Config.TargetVocabularySize;

        public int MaxSteps => maxSteps;

        public void Step(ReadOnlySpan<int> lastTokens, Span<double> logProbabilities)
        {
            var s = sources.Max(x => x.Length);
            var source = new int[Rows * s];
            for (var r = 0; r < Rows; r++)
            {
                histories[r].Add(lastTokens[r]);
                sources[r / copies].CopyTo(source.AsSpan(r * s));
            }
            var t = histories[0].Count;
            var target = histories.SelectMany(h => h).ToArray();
            var training = model.Training;
            model.Training = false;
            var logits = model.Forward(new TokenIds(source, Rows, s), new TokenIds(target, Rows, t)).ToArray();
            model.Training = training;
            var v = VocabularySize;
            for (var r = 0; r < Rows; r++)
                Sampling.LogSoftmax(logits.AsSpan(((r * t) + t - 1) * v, v), logProbabilities.Slice(r * v, v));
        }

        public void Reorder(ReadOnlySpan<int> parents)
        {
            var old = histories;
            histories = new List<int>[Rows];
            for (var r = 0; r < Rows; r++)
                histories[r] = [.. old[parents[r]]];
        }
    }

    /// <summary>The same scorer without its <see cref="IGreedySequenceScorer"/>: greedy decoding then chooses on the host from [R, V] scores.</summary>
    private sealed class HostChoice(ISequenceScorer scorer) : ISequenceScorer
    {
        public int Rows => scorer.Rows;

        public int VocabularySize => scorer.VocabularySize;

        public int MaxSteps => scorer.MaxSteps;

        public void Step(ReadOnlySpan<int> lastTokens, Span<double> logProbabilities) => scorer.Step(lastTokens, logProbabilities);

        public void Reorder(ReadOnlySpan<int> parents) => scorer.Reorder(parents);
    }

    private static readonly int[][] Sources = [[3, 5, 7, 4], [6, 8], [4, 4, 3]];

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Transformer_greedy_with_the_cache_equals_recomputation_and_beam_width_one(string backend)
    {
        using var model = new Transformer(devices.Get(backend), Seq2Seq, seed: 7);
        const int steps = 6;
        Hypothesis[] cached;
        using (var scorer = new TransformerScorer(model, Sources, 1, steps))
            cached = SequenceDecoding.Greedy(scorer, 1, 2, Banned);
        var full = SequenceDecoding.Greedy(new RecomputingScorer(model, Sources, 1, steps), 1, 2, Banned);
        Hypothesis[] widthOne, hostChoice;
        using (var scorer = new TransformerScorer(model, Sources, 1, steps))
            widthOne = SequenceDecoding.BeamSearch(scorer, Sources.Length, new BeamSearchOptions { Width = 1 }, 1, 2, Banned);
        using (var scorer = new TransformerScorer(model, Sources, 1, steps))
            hostChoice = SequenceDecoding.Greedy(new HostChoice(scorer), 1, 2, Banned);
        for (var s = 0; s < Sources.Length; s++)
        {
            Assert.Equal(full[s].Tokens, cached[s].Tokens);
            Assert.Equal(full[s].LogProbability, cached[s].LogProbability, 4);
            Assert.Equal(hostChoice[s].Tokens, widthOne[s].Tokens);
            Assert.Equal(hostChoice[s].LogProbability, widthOne[s].LogProbability, 9);
        }
        Assert.True(model.Training, "the scorer restores the model's mode");
    }

    /// <summary>
    /// The device's greedy choice (<see cref="TransformerScorer.StepGreedy"/>: argmax and log p on the
    /// device, ids read back) against the host's argmax over the same scorer's [R, V] log-probabilities:
    /// the same tokens and ends; log p within float32 rounding. Then with the host's first choices
    /// banned as well, so the exclusion decides.
    /// </summary>
    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Transformer_greedy_chosen_on_the_device_equals_the_host_choice(string backend)
    {
        using var model = new Transformer(devices.Get(backend), Seq2Seq with { TargetVocabularySize = 37 }, seed: 5);
        int[][] sources = [.. Sources, [7, 1, 2, 8, 5, 3], [5]];
        const int steps = 8;
        var host = Decode(Banned, onDevice: false);
        int[] moreBanned = [.. Banned, .. host.Where(h => h.Tokens.Length > 0).Select(h => h.Tokens[0]).Distinct()];
        foreach (var banned in new[] { Banned, moreBanned })
        {
            var expected = Decode(banned, onDevice: false);
            var actual = Decode(banned, onDevice: true);
            for (var s = 0; s < sources.Length; s++)
            {
                Assert.Equal(expected[s].Tokens, actual[s].Tokens);
                Assert.Equal(expected[s].Finished, actual[s].Finished);
                Assert.Equal(expected[s].LogProbability, actual[s].LogProbability, 1e-5 * (1 + Math.Abs(expected[s].LogProbability)));
                Assert.DoesNotContain(actual[s].Tokens, t => banned.Contains(t));
            }
        }
        Assert.NotEqual(host.Select(h => h.Tokens.FirstOrDefault(-1)), Decode(moreBanned, onDevice: true).Select(h => h.Tokens.FirstOrDefault(-1)));

        Hypothesis[] Decode(int[] banned, bool onDevice)
        {
            using var scorer = new TransformerScorer(model, sources, 1, steps);
            return SequenceDecoding.Greedy(onDevice ? scorer : new HostChoice(scorer), 1, 2, banned);
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Transformer_beam_search_through_the_reordered_cache_equals_recomputation(string backend)
    {
        using var model = new Transformer(devices.Get(backend), Seq2Seq, seed: 9);
        var options = new BeamSearchOptions { Width = 3, LengthPenalty = 0.6 };
        const int steps = 7;
        Hypothesis[] cached;
        using (var scorer = new TransformerScorer(model, Sources, 3, steps))
            cached = SequenceDecoding.BeamSearch(scorer, Sources.Length, options, 1, 2, Banned);
        var full = SequenceDecoding.BeamSearch(new RecomputingScorer(model, Sources, 3, steps), Sources.Length, options, 1, 2, Banned);
        for (var s = 0; s < Sources.Length; s++)
        {
            Assert.Equal(full[s].Tokens, cached[s].Tokens);
            Assert.Equal(full[s].LogProbability, cached[s].LogProbability, 4);
            Assert.Equal(full[s].Score, cached[s].Score, 4);
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Cache_reorder_moves_rows_so_the_next_step_continues_the_parent(string backend)
    {
        var device = devices.Get(backend);
        using var model = new Transformer(device, Seq2Seq, seed: 1);
        using var scorer = new TransformerScorer(model, [[3, 5, 7], [6, 8, 4]], 2, 4);
        var v = scorer.VocabularySize;
        var logP = new double[4 * v];
        scorer.Step([1, 1, 1, 1], logP);
        scorer.Step([4, 5, 6, 7], logP);
        var before = (double[])logP.Clone();
        // Row 0 ← row 1, row 1 ← row 0 (swap within source 0); rows 2, 3 keep theirs.
        scorer.Reorder([1, 0, 2, 3]);
        var reordered = new double[4 * v];
        scorer.Step([8, 8, 8, 8], reordered);

        using var reference = new TransformerScorer(model, [[3, 5, 7], [6, 8, 4]], 2, 4);
        reference.Step([1, 1, 1, 1], logP);
        reference.Step([5, 4, 6, 7], logP);
        Assert.Equal(before.AsSpan(v, v).ToArray(), logP.AsSpan(0, v).ToArray());
        var expected = new double[4 * v];
        reference.Step([8, 8, 8, 8], expected);
        for (var i = 0; i < expected.Length; i++)
            Assert.Equal(expected[i], reordered[i], 5);
        Assert.Throws<ArgumentException>(() => scorer.Reorder([0, 1, 2]));
        Assert.Throws<ArgumentException>(() => scorer.Reorder([0, 1, 2, 4]));
    }
}
