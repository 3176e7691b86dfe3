using System.Globalization;
using GpuTransformer.Layers;

namespace GpuTransformer.Training.Inspection;

/// <summary>
/// The attention weights of one attention module of one layer for one sequence: per head a
/// [Tq, Tk] row-major matrix whose row q holds the weights query q puts on each key (each row
/// sums to 1 over the keys it may see; masked keys are 0).
/// </summary>
/// <param name="Kind">"self-attention" (language model), "encoder self-attention", "decoder self-attention" or "cross-attention".</param>
/// <param name="FileStem">File name stem, e.g. <c>decoder-cross</c>.</param>
/// <param name="Layer">Layer index.</param>
/// <param name="Queries">Tq.</param>
/// <param name="Keys">Tk.</param>
/// <param name="QueryLabels">Tq labels (tokens).</param>
/// <param name="KeyLabels">Tk labels.</param>
/// <param name="Heads">Per head, [Tq, Tk] weights.</param>
public sealed record AttentionMap(
    string Kind, string FileStem, int Layer, int Queries, int Keys,
    IReadOnlyList<string> QueryLabels, IReadOnlyList<string> KeyLabels, IReadOnlyList<float[]> Heads)
{
    /// <summary>Weight of query <paramref name="q"/> on key <paramref name="k"/> in head <paramref name="head"/>.</summary>
    public float this[int head, int q, int k] => Heads[head][(q * Keys) + k];
}

/// <summary>
/// Attention maps of a trained model: run the model's forward (evaluation mode) on one input,
/// then ask every attention module for the probabilities of that forward
/// (<see cref="MultiHeadAttention.LastProbabilities"/>, i.e. <c>Attention.Probabilities</c> on the
/// q and k the layer computed, with its causal and padding masks), and write them as PNG
/// heatmaps with the tokens on the axes: one grid per layer and module (all heads, shared colour
/// scale) and one file per head.
/// </summary>
public static class AttentionMaps
{
    /// <summary>
    /// Causal self-attention of every layer of a decoder-only model for <paramref name="ids"/>
    /// (one sequence, ≤ max_seq_len), labelled with <paramref name="labels"/> (one per id).
    /// </summary>
    public static IReadOnlyList<AttentionMap> ForLanguageModel(LanguageModel model, IReadOnlyList<int> ids, IReadOnlyList<string> labels)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(ids);
        RequireLabels(ids.Count, labels, nameof(labels));
        using (model.EvaluationMode())
        {
            model.Forward(new TokenIds(ids.ToArray(), 1, ids.Count));
            return [.. model.Layers.Select((layer, i) => Read(layer.SelfAttention, 0, "self-attention", "self", i, labels, labels))];
        }
    }

    /// <summary>
    /// Encoder self-attention, decoder (causal) self-attention and cross-attention of every layer
    /// for sequence <paramref name="row"/> of a batch of source/target-input pairs (padded with
    /// pad_id to the longest; padded keys are masked, so their columns are 0). Labels are per
    /// token of each sequence; padded positions are labelled <c>&lt;pad&gt;</c>.
    /// </summary>
    public static IReadOnlyList<AttentionMap> ForTransformer(
        Transformer model, IReadOnlyList<int[]> sources, IReadOnlyList<int[]> targetInputs, int row,
        Func<int, string> sourceLabel, Func<int, string> targetLabel)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(sources);
        ArgumentNullException.ThrowIfNull(targetInputs);
        ArgumentNullException.ThrowIfNull(sourceLabel);
        ArgumentNullException.ThrowIfNull(targetLabel);
        if (sources.Count == 0 || sources.Count != targetInputs.Count)
            throw new ArgumentException($"{sources.Count} sources and {targetInputs.Count} target inputs: one of each per sequence, at least one.", nameof(targetInputs));
        ArgumentOutOfRangeException.ThrowIfNegative(row);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(row, sources.Count);
        var pad = model.Config.PadId;
        var (source, s) = Padded(sources, pad, nameof(sources));
        var (target, t) = Padded(targetInputs, pad, nameof(targetInputs));
        var sourceLabels = Labels(sources[row], s, sourceLabel);
        var targetLabels = Labels(targetInputs[row], t, targetLabel);

        using (model.EvaluationMode())
        {
            model.Forward(new TokenIds(source, sources.Count, s), new TokenIds(target, targetInputs.Count, t));
            var maps = new List<AttentionMap>();
            for (var i = 0; i < model.Encoder.Layers.Count; i++)
                maps.Add(Read(model.Encoder.Layers[i].SelfAttention, row, "encoder self-attention", "encoder-self", i, sourceLabels, sourceLabels));
            for (var i = 0; i < model.Decoder.Layers.Count; i++)
            {
                var layer = model.Decoder.Layers[i];
                maps.Add(Read(layer.SelfAttention, row, "decoder self-attention", "decoder-self", i, targetLabels, targetLabels));
                maps.Add(Read(layer.CrossAttention, row, "cross-attention", "decoder-cross", i, targetLabels, sourceLabels));
            }
            return maps;
        }
    }

    /// <summary>Sequence <paramref name="row"/>'s weights of the module's last forward, split per head.</summary>
    private static AttentionMap Read(MultiHeadAttention attention, int row, string kind, string stem, int layer, IReadOnlyList<string> queryLabels, IReadOnlyList<string> keyLabels)
    {
        var shape = attention.LastAttentionShape ?? throw new InvalidOperationException("The attention module has not run.");
        var all = attention.LastProbabilities();                                   // [B, H, Tq, Tk]
        var size = shape.QueryLength * shape.KeyLength;
        var heads = new float[shape.Heads][];
        for (var h = 0; h < shape.Heads; h++)
            heads[h] = all.AsSpan(((row * shape.Heads) + h) * size, size).ToArray();
        return new AttentionMap(kind, stem, layer, shape.QueryLength, shape.KeyLength, queryLabels, keyLabels, heads);
    }

    private static (int[] Ids, int Length) Padded(IReadOnlyList<int[]> sequences, int pad, string name)
    {
        if (sequences.Any(q => q is null || q.Length == 0))
            throw new ArgumentException("Every sequence needs at least one token.", name);
        var length = sequences.Max(q => q.Length);
        if (pad < 0 && sequences.Any(q => q.Length != length))
            throw new ArgumentException("Sequences of different lengths need a pad_id in the model's config.", name);
        var ids = new int[sequences.Count * length];
        Array.Fill(ids, pad);
        for (var b = 0; b < sequences.Count; b++)
            sequences[b].CopyTo(ids.AsSpan(b * length));
        return (ids, length);
    }

    private static string[] Labels(int[] ids, int length, Func<int, string> label) =>
        [.. Enumerable.Range(0, length).Select(i => i < ids.Length ? label(ids[i]) : "<pad>")];

    private static void RequireLabels(int count, IReadOnlyList<string> labels, string name)
    {
        ArgumentNullException.ThrowIfNull(labels, name);
        if (labels.Count != count)
            throw new ArgumentException($"{labels.Count} labels for {count} tokens.", name);
    }
}
