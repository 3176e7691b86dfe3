namespace GpuTransformer.Tests.Layers;

/// <summary>
/// Whole-model backward against central differences of the model's own forward
/// (<see cref="LayerGradientCheck"/>, L = Σ logits·R), in training mode with dropout 0.2 (the
/// dropout stream is rewound before every forward, so each forward draws the same masks), padded
/// batches and tied/shared tables — what the PyTorch parity goldens (dropout 0) cannot cover.
/// A selection of parameters (embedding tables, attention, norms, head), each along a random
/// direction and at one entry, on every backend present: B 2, T 4, S 5, E 8, 2 heads, d_ff 12.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class ModelGradientTests(Devices devices)
{
    public static TheoryData<string, bool, bool> LanguageModelCases => Devices.BackendsTimes((true, true), (false, false));

    public static TheoryData<string, bool, bool> TransformerCases => Devices.BackendsTimes((false, true));

    [Theory]
    [MemberData(nameof(LanguageModelCases))]
    public void Language_model_gradients_with_dropout_and_padding(string backend, bool normFirst, bool tied)
    {
        var device = devices.Get(backend);
        var config = new LanguageModelConfig
        {
            DModel = 8, NHead = 2, NumLayers = 2, DimFeedforward = 12, Dropout = 0.2f, Activation = "gelu_tanh",
            NormFirst = normFirst, VocabularySize = 11, MaxSequenceLength = 6, TieWeights = tied, PadId = 0,
        };
        using var model = new LanguageModel(device, config, seed: 3);
        LayerGradientTests.RandomiseBiases(model, 4);
        var ids = new TokenIds(new[] { 5, 3, 9, 2, 7, 1, 0, 0 }, 2, 4);
        var start = model.RandomState;
        var check = new LayerGradientCheck(device, () =>
        {
            model.RandomState = start;
            return model.Forward(ids);
        });
        string[] names = ["tok_embed.weight", "layers.0.self_attn.in_proj_weight", "layers.0.norm1.bias", "layers.1.linear1.weight", "layers.1.self_attn.out_proj.bias", "norm.weight", "lm_head.weight"];
        foreach (var parameter in model.Parameters().Where(p => names.Contains(p.Name)))
            check.Probe(parameter, entries: 1);
        check.Run(model, model.Backward);
    }

    [Theory]
    [MemberData(nameof(TransformerCases))]
    public void Transformer_gradients_with_dropout_and_padding(string backend, bool normFirst, bool shared)
    {
        var device = devices.Get(backend);
        var config = new TransformerConfig
        {
            DModel = 8, NHead = 2, NumEncoderLayers = 1, NumDecoderLayers = 2, DimFeedforward = 12, Dropout = 0.2f,
            Activation = "gelu", NormFirst = normFirst, SourceVocabularySize = 13, TargetVocabularySize = shared ? 13 : 11,
            ShareEmbeddings = shared, MaxSequenceLength = 6, PadId = 0,
        };
        using var model = new Transformer(device, config, seed: 5);
        LayerGradientTests.RandomiseBiases(model, 6);
        var source = new TokenIds(new[] { 4, 8, 12, 3, 5, 6, 9, 0, 0, 0 }, 2, 5);
        var target = new TokenIds(new[] { 1, 7, 3, 2, 1, 4, 0, 0 }, 2, 4);
        var start = model.RandomState;
        var check = new LayerGradientCheck(device, () =>
        {
            model.RandomState = start;
            return model.Forward(source, target);
        });
        string[] names =
        [
            "src_embed.weight", "tgt_embed.weight", "encoder.layers.0.self_attn.in_proj_bias", "encoder.norm.weight",
            "decoder.layers.0.multihead_attn.in_proj_weight", "decoder.layers.1.linear2.weight", "decoder.layers.1.norm3.bias",
            "generator.weight", "generator.bias",
        ];
        foreach (var parameter in model.Parameters().Where(p => names.Contains(p.Name)))
            check.Probe(parameter, entries: 1);
        check.Run(model, model.Backward);
    }
}
