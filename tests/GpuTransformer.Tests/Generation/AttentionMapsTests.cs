using GpuTransformer.Reporting;
using GpuTransformer.Training.Inspection;

namespace GpuTransformer.Tests.Generation;

/// <summary>
/// Attention maps read through the MultiHeadAttention inspection hook: rows are distributions
/// (sum 1), causal maps are lower-triangular, padded keys get exactly 0, padding does not change
/// the real rows, a prefix's map is the top-left block of a longer one, and the PNGs are written.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class AttentionMapsTests(Devices devices)
{
    private const double Tolerance = 1e-5;

    private static readonly LanguageModelConfig Lm = new()
    {
        DModel = 16, NHead = 2, NumLayers = 2, DimFeedforward = 24, VocabularySize = 13, MaxSequenceLength = 12, PadId = 0,
    };

    private static readonly TransformerConfig Seq2Seq = new()
    {
        DModel = 16, NHead = 4, NumEncoderLayers = 1, NumDecoderLayers = 1, DimFeedforward = 24,
        SourceVocabularySize = 9, TargetVocabularySize = 10, MaxSequenceLength = 10, PadId = 0,
    };

    private static void AssertRowsSumToOne(AttentionMap map, int queries, int keys)
    {
        for (var h = 0; h < map.Heads.Count; h++)
        {
            for (var q = 0; q < queries; q++)
            {
                var sum = 0.0;
                for (var k = 0; k < keys; k++)
                    sum += map[h, q, k];
                Assert.True(Math.Abs(sum - 1) <= Tolerance, $"{map.Kind} layer {map.Layer} head {h} row {q} sums to {sum}");
            }
        }
    }

    private static void AssertZeroWhere(AttentionMap map, Func<int, int, bool> masked, string why)
    {
        for (var h = 0; h < map.Heads.Count; h++)
        {
            for (var q = 0; q < map.Queries; q++)
            {
                for (var k = 0; k < map.Keys; k++)
                {
                    if (masked(q, k))
                        Assert.True(map[h, q, k] == 0f, $"{map.Kind} layer {map.Layer} head {h} [{q}, {k}] = {map[h, q, k]}: {why}");
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Language_model_maps_are_causal_distributions_and_prefixes_agree(string backend)
    {
        using var model = new LanguageModel(devices.Get(backend), Lm, seed: 4);
        int[] ids = [2, 5, 7, 3, 9, 4];
        var labels = ids.Select(i => $"t{i}").ToArray();
        var maps = AttentionMaps.ForLanguageModel(model, ids, labels);
        Assert.Equal(2, maps.Count);
        foreach (var map in maps)
        {
            Assert.Equal((6, 6, 2), (map.Queries, map.Keys, map.Heads.Count));
            AssertRowsSumToOne(map, 6, 6);
            AssertZeroWhere(map, (q, k) => k > q, "a causal map is lower-triangular");
            Assert.True(map[0, 5, 0] > 0 && map[1, 5, 4] > 0, "visible keys get weight");
        }
        var prefix = AttentionMaps.ForLanguageModel(model, ids[..4], labels[..4]);
        for (var layer = 0; layer < 2; layer++)
        {
            for (var h = 0; h < 2; h++)
            {
                for (var q = 0; q < 4; q++)
                {
                    for (var k = 0; k < 4; k++)
                        Assert.Equal(maps[layer][h, q, k], prefix[layer][h, q, k], 5);
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Transformer_maps_hide_padding_and_match_the_unpadded_sequence(string backend)
    {
        using var model = new Transformer(devices.Get(backend), Seq2Seq, seed: 6);
        int[][] sources = [[3, 5, 7, 4], [6, 8]];
        int[][] targets = [[1, 4, 5], [1, 6]];
        var padded = AttentionMaps.ForTransformer(model, sources, targets, 1, i => $"s{i}", i => $"t{i}");
        var alone = AttentionMaps.ForTransformer(model, [sources[1]], [targets[1]], 0, i => $"s{i}", i => $"t{i}");
        Assert.Equal(["encoder self-attention", "decoder self-attention", "cross-attention"], padded.Select(m => m.Kind));
        var (encoder, decoder, cross) = (padded[0], padded[1], padded[2]);
        Assert.Equal(["s6", "s8", "<pad>", "<pad>"], encoder.KeyLabels);
        Assert.Equal(["t1", "t6", "<pad>"], cross.QueryLabels);

        AssertZeroWhere(encoder, (q, k) => k >= 2, "padded source keys are masked");
        AssertZeroWhere(decoder, (q, k) => k > q || k >= 2, "causal, and the padded target key is masked");
        AssertZeroWhere(cross, (q, k) => k >= 2, "padded memory keys are masked");
        AssertRowsSumToOne(encoder, 4, 4);
        AssertRowsSumToOne(cross, 3, 4);
        AssertRowsSumToOne(decoder, 2, 3);

        for (var m = 0; m < 3; m++)
        {
            var real = alone[m];
            for (var h = 0; h < 4; h++)
            {
                for (var q = 0; q < real.Queries; q++)
                {
                    for (var k = 0; k < real.Keys; k++)
                        Assert.Equal(real[h, q, k], padded[m][h, q, k], 5);
                }
            }
        }
    }

    [Fact]
    public void Maps_are_written_as_a_grid_per_layer_and_a_file_per_head()
    {
        using var model = new Transformer(devices.Get("cpu"), Seq2Seq with { NumDecoderLayers = 2 }, seed: 2);
        var maps = AttentionMaps.ForTransformer(model, [[3, 5, 7]], [[1, 4]], 0, i => $"s{i}", i => $"t{i}");
        using var folder = new TempFolder();
        var written = AttentionHeatmap.SaveMaps(maps, folder.Path);
        Assert.Equal(5 * (1 + 4), written.Count); // 1 encoder + 2 × (self, cross) maps, each a grid + 4 heads
        foreach (var name in new[] { "encoder-self-layer0.png", "decoder-self-layer1.png", "decoder-cross-layer1.png", "decoder-cross-layer0-head3.png" })
        {
            var path = Path.Combine(folder.Path, name);
            Assert.Contains(path, written);
            var (width, height) = Fixtures.PngSize(path);
            Assert.True(width >= 260 && height >= 240, $"{name} is {width}×{height}");
        }
        Assert.Equal(maps.Count, AttentionHeatmap.SaveMaps(maps, Path.Combine(folder.Path, "grids"), singleHeads: false).Count);
    }

    [Fact]
    public void Bad_inputs_are_refused()
    {
        using var model = new LanguageModel(devices.Get("cpu"), Lm);
        Assert.Throws<ArgumentException>(() => AttentionMaps.ForLanguageModel(model, [2, 3], ["a"]));
        using var fresh = new LanguageModel(devices.Get("cpu"), Lm);
        Assert.Throws<InvalidOperationException>(() => fresh.Layers[0].SelfAttention.LastProbabilities());
        using var transformer = new Transformer(devices.Get("cpu"), Seq2Seq);
        Assert.Throws<ArgumentException>(() => AttentionMaps.ForTransformer(transformer, [[3]], [[1], [1]], 0, i => "", i => ""));
        Assert.Throws<ArgumentOutOfRangeException>(() => AttentionMaps.ForTransformer(transformer, [[3]], [[1]], 1, i => "", i => ""));
    }
}
