namespace GpuTransformer.Tests.Layers;

/// <summary>
/// What the models promise besides their gradients: bad input refused before any launch with
/// a message naming the problem; dropout is the identity in evaluation mode and reproducible
/// from the seed (and from a restored <see cref="DropoutState"/>) in training mode; no device
/// allocation after the first step with a given shape; the memory estimate against the
/// measured bytes; incremental decoding with a key/value cache gives the full forward's logits;
/// each on every backend present (the PyTorch parity cases are ParityTests). Tiny shapes
/// (E 8–16, T ≤ 9) keep the simulator fast.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class ModelBehaviourTests(Devices devices, ITestOutputHelper output)
{
    private static readonly LanguageModelConfig Lm = new()
    {
        DModel = 8, NHead = 2, NumLayers = 2, DimFeedforward = 12, Dropout = 0.3f, Activation = "gelu_tanh",
        VocabularySize = 11, MaxSequenceLength = 9, TieWeights = false, PadId = 0,
    };

    private static readonly TransformerConfig Seq2Seq = new()
    {
        DModel = 8, NHead = 2, NumEncoderLayers = 2, NumDecoderLayers = 2, DimFeedforward = 12, Dropout = 0.3f,
        SourceVocabularySize = 13, TargetVocabularySize = 11, MaxSequenceLength = 9, PadId = 0,
    };

    // ------------------------------------------------------------------ bad input

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Bad_ids_lengths_and_shapes_are_refused_naming_the_problem(string backend)
    {
        var device = devices.Get(backend);
        using var lm = new LanguageModel(device, Lm);
        var error = Assert.Throws<ArgumentException>(() => _ = lm.Forward(new TokenIds(new[] { 1, 2, 3, 4, 5, 11 }, 2, 3)));
        Assert.Contains("11", error.Message);
        Assert.Contains("[1, 2]", error.Message);
        Assert.Contains("vocabulary of size 11", error.Message);
        error = Assert.Throws<ArgumentException>(() => _ = lm.Forward(new TokenIds(new[] { -1, 2 }, 1, 2)));
        Assert.Contains("[0, 0]", error.Message);
        error = Assert.Throws<ArgumentException>(() => _ = lm.Forward(new TokenIds(new int[10], 1, 10)));
        Assert.Contains("max_seq_len 9", error.Message);
        error = Assert.Throws<ArgumentException>(() => _ = lm.Forward(new TokenIds(new int[6], 2, 3), new int[5]));
        Assert.Contains("[2, 3]", error.Message);
        error = Assert.Throws<ArgumentException>(() => lm.TrainStep(new ModelBatch(new TokenIds(new int[6], 2, 3), new TokenIds(new int[6], 3, 2))));
        Assert.Contains("[3, 2]", error.Message);
        Assert.Contains("[2, 3]", error.Message);
        error = Assert.Throws<ArgumentException>(() => lm.TrainStep(new ModelBatch(new TokenIds(new int[6], 2, 3), new TokenIds(new[] { 1, 2, 3, 4, 12, 0 }, 2, 3))));
        Assert.Contains("12", error.Message);
        Assert.Contains("[1, 1]", error.Message);
        Assert.Throws<ArgumentException>(() => new TokenIds(new int[5], 2, 3));

        using var transformer = new Transformer(device, Seq2Seq);
        error = Assert.Throws<ArgumentException>(() => _ = transformer.Forward(new TokenIds(new int[6], 2, 3), new TokenIds(new int[6], 3, 2)));
        Assert.Contains("[3, 2]", error.Message);
        Assert.Contains("2 sequences", error.Message);
        error = Assert.Throws<ArgumentException>(() => _ = transformer.Forward(new TokenIds(new[] { 1, 13 }, 1, 2), new TokenIds(new[] { 1 }, 1, 1)));
        Assert.Contains("13", error.Message);
        Assert.Contains("source", error.Message);
        error = Assert.Throws<ArgumentException>(() => _ = transformer.Forward(new TokenIds(new[] { 1 }, 1, 1), new TokenIds(new[] { 1, 11 }, 1, 2)));
        Assert.Contains("targetInput", error.Message);
        error = Assert.Throws<ArgumentException>(() => _ = transformer.Forward(new TokenIds(new int[12], 1, 12), new TokenIds(new[] { 1 }, 1, 1)));
        Assert.Contains("max_seq_len", error.Message);
        Assert.Throws<InvalidOperationException>(() => _ = new Transformer(device, Seq2Seq).Decode(new TokenIds(new[] { 1 }, 1, 1)));
    }

    // ------------------------------------------------------------------ dropout

    [Fact]
    public void An_evaluation_scope_turns_every_module_to_evaluation_and_restores_the_mode_before_it()
    {
        using var model = new LanguageModel(devices.Get("cpu"), Lm);
        IModel asModel = model;
        using (asModel.EvaluationMode())
        {
            Assert.False(model.Training);
            Assert.All(model.Layers, layer => Assert.False(layer.Training));
            using (model.EvaluationMode())
                Assert.False(model.Training);
            Assert.False(model.Training);   // the inner scope restores evaluation, the mode it found
        }
        Assert.True(model.Training);
        Assert.All(model.Layers, layer => Assert.True(layer.Training));

        model.Training = false;
        using (model.EvaluationMode())
            Assert.False(model.Training);
        Assert.False(model.Training);   // a model already in evaluation stays there
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Dropout_is_the_identity_in_evaluation_mode_and_reproducible_from_the_seed_in_training(string backend)
    {
        var device = devices.Get(backend);
        var ids = new TokenIds(new[] { 3, 1, 4, 1, 5, 9, 2, 6 }, 2, 4);
        using var model = new LanguageModel(device, Lm, seed: 1);
        using var noDropout = new LanguageModel(device, Lm with { Dropout = 0f }, seed: 1);
        noDropout.Training = false; // the attention path of evaluation (training may run it unfused: KernelTuning.UnfusedAttentionMaxLength)
        var reference = noDropout.Forward(ids).ToArray();

        model.Training = false;
        var evaluation = model.Forward(ids).ToArray();
        Assert.Equal(Bitwise.Bits(reference), Bitwise.Bits(evaluation));
        Assert.Equal(new DropoutState(1, 0), model.RandomState); // evaluation draws nothing

        model.Training = true;
        var first = model.Forward(ids).ToArray();
        var state = model.RandomState;
        var second = model.Forward(ids).ToArray();
        Assert.NotEqual(Bitwise.Bits(first), Bitwise.Bits(evaluation));
        Assert.NotEqual(Bitwise.Bits(first), Bitwise.Bits(second));
        Assert.True(state.Offset > 0);

        model.RandomState = state;   // a resumed run draws the masks the uninterrupted one drew
        Assert.Equal(Bitwise.Bits(second), Bitwise.Bits(model.Forward(ids).ToArray()));
        using var twin = new LanguageModel(device, Lm, seed: 1);
        Assert.Equal(Bitwise.Bits(first), Bitwise.Bits(twin.Forward(ids).ToArray()));
    }

    // ------------------------------------------------------------------ gradient accumulation

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Gradients_accumulate_over_micro_batches_until_zeroed(string backend)
    {
        var device = devices.Get(backend);
        var source = new TokenIds(new[] { 3, 1, 4, 1, 5, 9, 2, 0 }, 2, 4);
        var targetInput = new TokenIds(new[] { 1, 7, 3, 1, 4, 0 }, 2, 3);
        var targetOutput = new TokenIds(new[] { 7, 3, 2, 4, 2, 0 }, 2, 3);
        using var model = new Transformer(device, Seq2Seq with { Dropout = 0f, SourceVocabularySize = 11, ShareEmbeddings = true });
        var once = Step(1);
        var twice = Step(2);
        foreach (var (name, gradient) in once)
        {
            Assert.Contains(gradient, g => g != 0f);
            TestTensors.AssertClose(gradient.Select(g => 2 * g).ToArray(), twice[name], 1e-7, 1e-5, name);
        }

        Dictionary<string, float[]> Step(int times)
        {
            model.ZeroGradients();
            for (var i = 0; i < times; i++)
                model.TrainStep(new ModelBatch(targetInput, targetOutput) { Source = source });
            return model.Parameters().ToDictionary(p => p.Name, p => p.Gradient.ToArray());
        }
    }

    // ------------------------------------------------------------------ memory

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void No_device_allocation_after_the_first_step_with_a_shape_and_the_estimate_matches(string backend)
    {
        var device = devices.Get(backend);
        var ids = new TokenIds(new[] { 3, 1, 4, 1, 5, 9, 2, 6, 5, 0, 0, 0 }, 2, 6);
        var targets = new TokenIds(new[] { 1, 4, 1, 5, 9, 2, 6, 5, 3, 0, 0, 0 }, 2, 6);
        using var lm = new LanguageModel(device, Lm);
        lm.TrainStep(new ModelBatch(ids, targets));
        var (allocations, bytes) = (TensorAllocations.Total, lm.DeviceBytes());
        lm.TrainStep(new ModelBatch(ids, targets));
        lm.TrainStep(new ModelBatch(new TokenIds(ids.Values[..6], 1, 6), new TokenIds(targets.Values[..6], 1, 6))); // smaller shapes reuse the buffers
        lm.TrainStep(new ModelBatch(ids, targets));
        Assert.Equal(allocations, TensorAllocations.Total);
        Assert.Equal(bytes, lm.DeviceBytes());
        AssertEstimate(MemoryEstimate.For(Lm, 2, 6, tuning: device.Tuning), bytes, "language model");

        var source = new TokenIds(new[] { 3, 1, 4, 1, 5, 9, 2, 0, 0 }, 1, 9);
        var targetInput = new TokenIds(new[] { 1, 7, 3, 0 }, 1, 4);
        var targetOutput = new TokenIds(new[] { 7, 3, 2, 0 }, 1, 4);
        using var transformer = new Transformer(device, Seq2Seq);
        transformer.TrainStep(new ModelBatch(targetInput, targetOutput) { Source = source });
        (allocations, bytes) = (TensorAllocations.Total, transformer.DeviceBytes());
        transformer.TrainStep(new ModelBatch(targetInput, targetOutput) { Source = source });
        Assert.Equal(allocations, TensorAllocations.Total);
        Assert.Equal(bytes, transformer.DeviceBytes());
        AssertEstimate(MemoryEstimate.For(Seq2Seq, 1, 9, 4, tuning: device.Tuning), bytes, "transformer");

        // For reference (not allocated): PLATFORM.md's CPU benchmark language model and the paper's base model.
        var reference = MemoryEstimate.For(new LanguageModelConfig { DModel = 256, NHead = 8, NumLayers = 4, DimFeedforward = 1024, VocabularySize = 8192, MaxSequenceLength = 128 }, 16, 128);
        var paperBase = MemoryEstimate.For(new TransformerConfig { SourceVocabularySize = 37000, TargetVocabularySize = 37000, ShareEmbeddings = true }, 32, 128, 128);
        output.WriteLine($"LM d256 L4 V8192 at [16, 128]: {reference}, total {reference.Total / 1e6:F1} MB");
        output.WriteLine($"base Transformer (shared 37k vocabulary) at [32, 128]: {paperBase}, total {paperBase.Total / 1e6:F1} MB");
    }

    /// <summary>
    /// The estimate's module bytes against <see cref="Module.DeviceBytes"/>: equal up to the
    /// one-element placeholders of buffers a path never uses (≤ 1 % or 2 KiB).
    /// </summary>
    private void AssertEstimate(MemoryEstimate estimate, long measured, string what)
    {
        var difference = Math.Abs(estimate.ModuleBytes - measured);
        output.WriteLine($"{what}: estimate {estimate.ModuleBytes} B (total with AdamW and scratch {estimate.Total} B), measured {measured} B, Δ {difference} B");
        Assert.True(difference <= Math.Max(2048, measured / 100), $"{what}: estimate {estimate.ModuleBytes} B vs measured {measured} B");
    }

    // ------------------------------------------------------------------ incremental decoding

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Language_model_decoding_token_by_token_gives_the_full_forward_logits(string backend)
    {
        var device = devices.Get(backend);
        using var model = new LanguageModel(device, Lm with { NormFirst = true });
        model.Training = false;
        // Right-padded second row: its pad keys are masked in both passes.
        var ids = new TokenIds(new[] { 3, 1, 4, 1, 5, 9, 2, 2, 7, 1, 0, 0, 0, 0 }, 2, 7);
        var full = model.Forward(ids).ToArray();
        var v = Lm.VocabularySize;

        using var cache = model.CreateCache(2, 8);
        var steps = new[] { 3, 1, 1, 2 }; // a prompt of 3, then single tokens, then 2 at once
        var position = 0;
        foreach (var step in steps)
        {
            var chunk = new int[2 * step];
            for (var b = 0; b < 2; b++)
                ids.Values.Slice((b * 7) + position, step).CopyTo(chunk.AsMemory(b * step));
            var logits = model.ForwardIncremental(new TokenIds(chunk, 2, step), cache).ToArray();
            for (var b = 0; b < 2; b++)
            {
                for (var t = 0; t < step; t++)
                {
                    var expected = full.AsSpan((((b * 7) + position + t) * v), v);
                    TestTensors.AssertClose(expected, logits.AsSpan(((b * step) + t) * v, v), 1e-5, 1e-5, $"{backend}: logits [{b}, {position + t}]");
                }
            }
            position += step;
        }
        Assert.Equal(7, cache.Length);
        var overflow = Assert.Throws<ArgumentException>(() => _ = model.ForwardIncremental(new TokenIds(new int[4], 2, 2), cache));
        Assert.Contains("8 positions", overflow.Message);
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Transformer_decoding_token_by_token_gives_the_full_decode_logits(string backend)
    {
        var device = devices.Get(backend);
        using var model = new Transformer(device, Seq2Seq with { NormFirst = false });
        model.Training = false;
        var source = new TokenIds(new[] { 3, 1, 4, 1, 5, 9, 2, 6, 5, 0, 0, 0 }, 2, 6);
        var target = new TokenIds(new[] { 1, 7, 3, 2, 8, 1, 4, 10, 0, 0 }, 2, 5);
        var full = model.Forward(source, target).ToArray();
        var v = Seq2Seq.TargetVocabularySize;

        using var cache = model.StartDecoding(source, maxTargetLength: 5);
        for (var t = 0; t < 5; t++)
        {
            var logits = model.DecodeIncremental(new TokenIds(new[] { target[0, t], target[1, t] }, 2, 1), cache).ToArray();
            for (var b = 0; b < 2; b++)
                TestTensors.AssertClose(full.AsSpan(((b * 5) + t) * v, v), logits.AsSpan(b * v, v), 1e-5, 1e-5, $"{backend}: logits [{b}, {t}]");
        }
    }
}
