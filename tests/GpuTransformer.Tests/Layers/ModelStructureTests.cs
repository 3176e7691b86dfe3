namespace GpuTransformer.Tests.Layers;

/// <summary>
/// The models' parameters against the specification of scripts/parity/README.md (names in
/// PyTorch's state_dict order, shapes, weight-decay flags; <see cref="ParitySpec"/> expands the
/// tables) for several configurations, their initialisation (the README's "init" column), and
/// config errors, on every backend present. No kernel runs except the uploads of the initial values.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class ModelStructureTests(Devices devices)
{
    public static TheoryData<string, string> LanguageModelConfigs => Devices.BackendsTimes(
        new LanguageModelConfig { DModel = 16, NHead = 2, NumLayers = 2, DimFeedforward = 24, VocabularySize = 23, TieWeights = false }.ToJson(),
        new LanguageModelConfig { DModel = 12, NHead = 3, NumLayers = 1, DimFeedforward = 20, VocabularySize = 7, TieWeights = true }.ToJson(),
        new LanguageModelConfig { DModel = 8, NHead = 1, NumLayers = 3, DimFeedforward = 8, VocabularySize = 31, TieWeights = true, NormFirst = false }.ToJson());

    public static TheoryData<string, string> TransformerConfigs => Devices.BackendsTimes(
        new TransformerConfig { DModel = 16, NHead = 2, NumEncoderLayers = 2, NumDecoderLayers = 2, DimFeedforward = 24, SourceVocabularySize = 23, TargetVocabularySize = 19 }.ToJson(),
        new TransformerConfig { DModel = 12, NHead = 4, NumEncoderLayers = 1, NumDecoderLayers = 3, DimFeedforward = 16, SourceVocabularySize = 17, TargetVocabularySize = 17, ShareEmbeddings = true }.ToJson(),
        new TransformerConfig { DModel = 8, NHead = 2, NumEncoderLayers = 3, NumDecoderLayers = 1, DimFeedforward = 10, SourceVocabularySize = 9, TargetVocabularySize = 5, NormFirst = true }.ToJson());

    [Theory]
    [MemberData(nameof(LanguageModelConfigs))]
    public void Language_model_parameters_are_the_specified_state_dict(string backend, string configJson)
    {
        using var model = new LanguageModel(devices.Get(backend), LanguageModelConfig.FromJson(configJson));
        AssertMatchesSpec(model, StateDict.LanguageModelKind, configJson);
    }

    [Theory]
    [MemberData(nameof(TransformerConfigs))]
    public void Transformer_parameters_are_the_specified_state_dict(string backend, string configJson)
    {
        using var model = new Transformer(devices.Get(backend), TransformerConfig.FromJson(configJson));
        AssertMatchesSpec(model, StateDict.TransformerKind, configJson);
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Tied_and_shared_tables_are_one_parameter_used_by_embedding_and_output_projection(string backend)
    {
        var device = devices.Get(backend);
        using var lm = new LanguageModel(device, new LanguageModelConfig { DModel = 8, NHead = 2, NumLayers = 1, DimFeedforward = 8, VocabularySize = 7, TieWeights = true });
        Assert.Same(lm.TokenEmbedding.Weight, lm.OutputProjection.Weight);
        using var transformer = new Transformer(device, new TransformerConfig
        {
            DModel = 8, NHead = 2, NumEncoderLayers = 1, NumDecoderLayers = 1, DimFeedforward = 8,
            SourceVocabularySize = 9, TargetVocabularySize = 9, ShareEmbeddings = true,
        });
        Assert.Same(transformer.SourceEmbedding.Weight, transformer.TargetEmbedding.Weight);
        Assert.Same(transformer.SourceEmbedding.Weight, transformer.OutputProjection.Weight);
        Assert.NotNull(transformer.OutputProjection.Bias);
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Initialisation_follows_PyTorch_for_each_parameter_of_both_models(string backend)
    {
        var device = devices.Get(backend);
        var e = 32;
        var f = 48;
        using var transformer = new Transformer(device, new TransformerConfig
        {
            DModel = e, NHead = 4, NumEncoderLayers = 1, NumDecoderLayers = 1, DimFeedforward = f,
            SourceVocabularySize = 200, TargetVocabularySize = 150,
        }, seed: 1);
        var t = transformer.Parameters().ToDictionary(p => p.Name, p => p.Value.ToArray());
        AssertNormal(t["src_embed.weight"], "src_embed.weight");
        AssertNormal(t["tgt_embed.weight"], "tgt_embed.weight");
        // nn.Transformer: xavier_uniform on every ≥ 2-D encoder/decoder parameter.
        AssertUniform(t["encoder.layers.0.self_attn.in_proj_weight"], Math.Sqrt(6.0 / (e + (3 * e))), "in_proj_weight");
        AssertUniform(t["decoder.layers.0.multihead_attn.out_proj.weight"], Math.Sqrt(6.0 / (e + e)), "out_proj.weight");
        AssertUniform(t["encoder.layers.0.linear1.weight"], Math.Sqrt(6.0 / (e + f)), "linear1.weight");
        AssertUniform(t["decoder.layers.0.linear2.weight"], Math.Sqrt(6.0 / (f + e)), "linear2.weight");
        AssertUniform(t["encoder.layers.0.linear1.bias"], 1 / Math.Sqrt(e), "linear1.bias");
        AssertUniform(t["encoder.layers.0.linear2.bias"], 1 / Math.Sqrt(f), "linear2.bias");
        AssertUniform(t["generator.weight"], 1 / Math.Sqrt(e), "generator.weight (kaiming_uniform a=√5)");
        AssertUniform(t["generator.bias"], 1 / Math.Sqrt(e), "generator.bias");
        Assert.All(t["decoder.layers.0.self_attn.in_proj_bias"], v => Assert.Equal(0f, v));
        Assert.All(t["decoder.layers.0.self_attn.out_proj.bias"], v => Assert.Equal(0f, v));
        Assert.All(t["decoder.layers.0.norm3.weight"], v => Assert.Equal(1f, v));
        Assert.All(t["encoder.norm.bias"], v => Assert.Equal(0f, v));

        using var lm = new LanguageModel(device, new LanguageModelConfig { DModel = e, NHead = 4, NumLayers = 1, DimFeedforward = f, VocabularySize = 200, TieWeights = false }, seed: 2);
        var l = lm.Parameters().ToDictionary(p => p.Name, p => p.Value.ToArray());
        AssertNormal(l["tok_embed.weight"], "tok_embed.weight");
        // Bare nn.TransformerEncoderLayer: only in_proj is xavier; the linears keep nn.Linear's kaiming_uniform(a=√5).
        AssertUniform(l["layers.0.self_attn.in_proj_weight"], Math.Sqrt(6.0 / (e + (3 * e))), "in_proj_weight");
        AssertUniform(l["layers.0.self_attn.out_proj.weight"], 1 / Math.Sqrt(e), "out_proj.weight");
        AssertUniform(l["layers.0.linear1.weight"], 1 / Math.Sqrt(e), "linear1.weight");
        AssertUniform(l["layers.0.linear2.weight"], 1 / Math.Sqrt(f), "linear2.weight");
        AssertUniform(l["lm_head.weight"], 1 / Math.Sqrt(e), "lm_head.weight");
        Assert.All(l["layers.0.self_attn.in_proj_bias"], v => Assert.Equal(0f, v));

        // The seed decides the weights.
        using var again = new LanguageModel(device, lm.Config, seed: 2);
        using var other = new LanguageModel(device, lm.Config, seed: 3);
        Assert.Equal(l["layers.0.linear1.weight"], again.Parameters().Single(p => p.Name == "layers.0.linear1.weight").Value.ToArray());
        Assert.NotEqual(l["layers.0.linear1.weight"], other.Parameters().Single(p => p.Name == "layers.0.linear1.weight").Value.ToArray());
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void The_training_embedding_init_is_part_of_the_config_and_rebuilt_from_its_JSON(string backend)
    {
        var device = devices.Get(backend);
        var pytorch = new LanguageModelConfig { DModel = 16, NHead = 2, NumLayers = 1, DimFeedforward = 24, VocabularySize = 300 };
        var training = pytorch with { EmbeddingInit = LanguageModelConfig.ScaledNormalEmbeddingInit };
        Assert.DoesNotContain("embedding_init", pytorch.ToJson(), StringComparison.Ordinal); // PyTorch's configs round-trip unchanged
        Assert.Contains("\"embedding_init\":\"scaled_normal\"", training.ToJson(), StringComparison.Ordinal);
        Assert.Equal(training, LanguageModelConfig.FromJson(training.ToJson()));

        // N(0, 1/d_model): bit for bit the N(0, 1) table of the same seed times 1/√d_model (float), every other weight the same.
        using var plain = new LanguageModel(device, pytorch, seed: 7);
        using var scaled = new LanguageModel(device, LanguageModelConfig.FromJson(training.ToJson()), seed: 7);
        var factor = 1f / MathF.Sqrt(16);
        foreach (var (a, b) in plain.Parameters().Zip(scaled.Parameters()))
        {
            var expected = a.Value.ToArray();
            if (a.Name == "tok_embed.weight")
                expected = Array.ConvertAll(expected, v => factor * v);
            Assert.Equal(expected, b.Value.ToArray());
        }
        AssertNormal(Array.ConvertAll(scaled.TokenEmbedding.Weight.Value.ToArray(), v => v / factor), "tok_embed.weight · √d_model");

        var error = Assert.Throws<ArgumentException>(() => LanguageModelConfig.FromJson(pytorch.ToJson().Replace("{", "{\"embedding_init\":\"xavier\",", StringComparison.Ordinal)));
        Assert.Contains("embedding_init 'xavier'", error.Message);
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Inconsistent_configs_are_refused_by_the_constructors(string backend)
    {
        var device = devices.Get(backend);
        var error = Assert.Throws<ArgumentException>(() => new LanguageModel(device, new LanguageModelConfig { DModel = 10, NHead = 3 }));
        Assert.Contains("divisible", error.Message);
        error = Assert.Throws<ArgumentException>(() => new Transformer(device, new TransformerConfig { DModel = 12, NHead = 5 }));
        Assert.Contains("divisible", error.Message);
        error = Assert.Throws<ArgumentException>(() => new Transformer(device, new TransformerConfig { SourceVocabularySize = 10, TargetVocabularySize = 12, ShareEmbeddings = true }));
        Assert.Contains("share_embeddings", error.Message);
        error = Assert.Throws<ArgumentException>(() => new SelfAttention(device, 512, 2, causal: false, new ParameterInitializer(0)));
        Assert.Contains("256", error.Message);
    }

    private static void AssertMatchesSpec(Module model, string kind, string configJson)
    {
        var expected = ParitySpec.ExpectedParameters(kind, configJson);
        var actual = model.Parameters().ToList();
        Assert.Equal(expected.Select(e => e.Name), actual.Select(p => p.Name));
        foreach (var (spec, parameter) in expected.Zip(actual))
        {
            Assert.True(spec.Shape.SequenceEqual(parameter.Shape), $"{spec.Name}: shape {Tensor<float>.Describe(parameter.Shape)}, spec {Tensor<float>.Describe(spec.Shape)}");
            Assert.True(spec.Decay == parameter.Decay, $"{spec.Name}: decay {parameter.Decay}, spec {spec.Decay}");
        }
    }

    /// <summary>N(0, 1): mean and standard deviation within 5 standard errors.</summary>
    private static void AssertNormal(float[] values, string what)
    {
        var mean = values.Average(v => (double)v);
        var std = Math.Sqrt(values.Average(v => (v - mean) * (v - mean)));
        var error = 1 / Math.Sqrt(values.Length);
        Assert.True(Math.Abs(mean) < 5 * error && Math.Abs(std - 1) < 5 * error * Math.Sqrt(0.5) + 0.01, $"{what}: mean {mean:g3}, std {std:g3} for N(0, 1)");
    }

    /// <summary>
    /// U(±bound): every value inside, the extremes near both ends (as n uniform samples reach), and the root mean square of a
    /// uniform (bound/√3, within 5 standard errors: the rms of n samples has a relative error ≈ 0.45/√n).
    /// </summary>
    private static void AssertUniform(float[] values, double bound, string what)
    {
        var (min, max) = (values.Min(), values.Max());
        var std = Math.Sqrt(values.Average(v => (double)v * v));
        // Both extremes beyond ±edge·bound unless an event of probability ((1 + edge)/2)ⁿ = 1e-6 happened.
        var edge = (2 * Math.Pow(1e-6, 1.0 / values.Length)) - 1;
        Assert.True(max <= bound && min >= -bound && max > edge * bound && min < -edge * bound, $"{what}: range [{min:g4}, {max:g4}] for U(±{bound:g4})");
        Assert.True(Math.Abs(std - (bound / Math.Sqrt(3))) < (5 * 0.45 / Math.Sqrt(values.Length)) * bound / Math.Sqrt(3), $"{what}: rms {std:g4} for U(±{bound:g4})");
    }
}
