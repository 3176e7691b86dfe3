using System.Globalization;
using System.Text;
using GpuTransformer.Training.Inspection;
using ScottPlot;

namespace GpuTransformer.Reporting;

/// <summary>
/// Attention-weight heatmaps: one [Tq, Tk] matrix (row q = the weights query q puts on each key)
/// with the query tokens down the left axis (first query at the top), key tokens along the bottom,
/// a colour bar and the title "layer L head H"; or a grid with one panel per head of a layer on a
/// shared colour scale. Token labels are made visible: spaces show as "·", newlines as "\n",
/// control characters as escapes, long tokens are cut.
/// </summary>
public static class AttentionHeatmap
{
    /// <summary>Writes one head's weights <paramref name="weights"/> [queries, keys] (row-major) to <paramref name="path"/>.</summary>
    /// <param name="path">Output PNG (folder created).</param>
    /// <param name="weights">[queries, keys] row-major attention probabilities.</param>
    /// <param name="queries">Tq, the rows.</param>
    /// <param name="keys">Tk, the columns.</param>
    /// <param name="queryLabels">Tq row labels (tokens).</param>
    /// <param name="keyLabels">Tk column labels.</param>
    /// <param name="layer">Layer index shown in the title.</param>
    /// <param name="head">Head index shown in the title.</param>
    /// <param name="title">A title instead of "layer L head H" (e.g. "decoder cross-attention layer 0 head 3").</param>
    public static void Save(string path, ReadOnlySpan<float> weights, int queries, int keys,
        IReadOnlyList<string> queryLabels, IReadOnlyList<string> keyLabels, int layer, int head, string? title = null)
    {
        Check(weights, queries, keys, queryLabels, keyLabels);
        var plot = new Plot();
        var heatmap = AddHeatmap(plot, weights, queries, keys, queryLabels, keyLabels, null, LabelSize(queries, keys));
        plot.Add.ColorBar(heatmap);
        plot.Title(title ?? $"layer {layer} head {head}");
        plot.XLabel("key");
        plot.YLabel("query");
        var cell = Math.Clamp(900 / Math.Max(queries, keys), 8, 40);
        PngFiles.Save(plot, path, Math.Max(420, keys * cell + 260), Math.Max(380, queries * cell + 200));
    }

    /// <summary>
    /// Writes each map as <c>{stem}-layer{L}.png</c> (every head in a grid) and, when
    /// <paramref name="singleHeads"/>, <c>{stem}-layer{L}-head{H}.png</c> under
    /// <paramref name="directory"/> (created). Returns the paths written.
    /// </summary>
    public static IReadOnlyList<string> SaveMaps(IEnumerable<AttentionMap> maps, string directory, bool singleHeads = true)
    {
        ArgumentNullException.ThrowIfNull(maps);
        ArgumentNullException.ThrowIfNull(directory);
        Directory.CreateDirectory(directory);
        var paths = new List<string>();
        var c = CultureInfo.InvariantCulture;
        foreach (var map in maps)
        {
            var grid = Path.Combine(directory, string.Create(c, $"{map.FileStem}-layer{map.Layer}.png"));
            SaveGrid(grid, map.Heads, map.Queries, map.Keys, map.QueryLabels, map.KeyLabels, map.Layer,
                title: string.Create(c, $"{map.Kind}, layer {map.Layer}"));
            paths.Add(grid);
            if (!singleHeads)
                continue;
            for (var h = 0; h < map.Heads.Count; h++)
            {
                var single = Path.Combine(directory, string.Create(c, $"{map.FileStem}-layer{map.Layer}-head{h}.png"));
                Save(single, map.Heads[h], map.Queries, map.Keys, map.QueryLabels, map.KeyLabels, map.Layer, h,
                    title: string.Create(c, $"{map.Kind}, layer {map.Layer}, head {h}"));
                paths.Add(single);
            }
        }
        return paths;
    }

    /// <summary>
    /// Writes every head of one layer as a grid of panels ("head 0", "head 1", …) under
    /// <paramref name="title"/> (default "layer L"), all on the colour scale [0, max weight].
    /// </summary>
    /// <param name="path">Output PNG (folder created).</param>
    /// <param name="heads">One [queries, keys] row-major matrix per head.</param>
    /// <param name="queries">Tq, the rows of each panel.</param>
    /// <param name="keys">Tk, the columns of each panel.</param>
    /// <param name="queryLabels">Tq row labels (tokens).</param>
    /// <param name="keyLabels">Tk column labels.</param>
    /// <param name="layer">Layer index shown in the default title.</param>
    /// <param name="columns">Panels per row (default: ⌈√heads⌉).</param>
    /// <param name="title">A title instead of "layer L".</param>
    public static void SaveGrid(string path, IReadOnlyList<float[]> heads, int queries, int keys,
        IReadOnlyList<string> queryLabels, IReadOnlyList<string> keyLabels, int layer, int? columns = null, string? title = null)
    {
        ArgumentNullException.ThrowIfNull(heads);
        if (heads.Count == 0)
            throw new ArgumentException("No heads to draw.", nameof(heads));
        foreach (var weights in heads)
            Check(weights, queries, keys, queryLabels, keyLabels);
        var cols = columns ?? (int)Math.Ceiling(Math.Sqrt(heads.Count));
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(cols);
        var rows = (heads.Count + cols - 1) / cols;
        var max = Math.Max(1e-6, heads.Max(h => h.Length == 0 ? 0 : h.Max()));

        var multiplot = new Multiplot();
        while (multiplot.Count() > 0)
            multiplot.RemovePlot(multiplot.GetPlot(0));
        multiplot.Layout = new ScottPlot.MultiplotLayouts.Grid(rows, cols);
        var labelSize = LabelSize(queries, keys) * 0.85f;
        for (var h = 0; h < heads.Count; h++)
        {
            var panel = multiplot.AddPlot();
            var heatmap = AddHeatmap(panel, heads[h], queries, keys, queryLabels, keyLabels, max, labelSize);
            // The first panel's title carries the figure's title; a colour bar on every panel keeps the panels the same size.
            panel.Title(h == 0 ? $"{title ?? $"layer {layer}"} — head {h}" : $"head {h}", size: 13);
            panel.Add.ColorBar(heatmap);
        }
        var cell = Math.Clamp(360 / Math.Max(queries, keys), 5, 24);
        var panelWidth = Math.Max(260, keys * cell + 190);
        var panelHeight = Math.Max(240, queries * cell + 150);
        var full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        multiplot.SavePng(full, cols * panelWidth, rows * panelHeight);
    }

    /// <summary>A token made visible for an axis label.</summary>
    public static string Label(string token, int maxLength = 12)
    {
        ArgumentNullException.ThrowIfNull(token);
        var text = new StringBuilder(token.Length);
        foreach (var c in token)
        {
            text.Append(c switch
            {
                ' ' => "·",
                '\n' => "\\n",
                '\t' => "\\t",
                '\r' => "\\r",
                _ when char.IsControl(c) => $"\\x{(int)c:X2}",
                _ => c.ToString(),
            });
        }
        if (text.Length == 0)
            return "∅";
        return text.Length <= maxLength ? text.ToString() : text.ToString(0, maxLength - 1) + "…";
    }

    private static ScottPlot.Plottables.Heatmap AddHeatmap(Plot plot, ReadOnlySpan<float> weights, int queries, int keys,
        IReadOnlyList<string> queryLabels, IReadOnlyList<string> keyLabels, double? max, float labelSize)
    {
        var data = new double[queries, keys];
        for (var q = 0; q < queries; q++)
        {
            for (var k = 0; k < keys; k++)
                data[q, k] = weights[q * keys + k];
        }
        var heatmap = plot.Add.Heatmap(data);
        heatmap.Colormap = new ScottPlot.Colormaps.Viridis();
        // Cell (q, k) is centred on x = k, y = Tq − 1 − q: row 0 (the first query) on top.
        if (max is { } m)
            heatmap.ManualRange = new ScottPlot.Range(0, m);

        plot.Axes.Bottom.TickGenerator = Ticks(keys, i => i, keyLabels);
        plot.Axes.Left.TickGenerator = Ticks(queries, i => queries - 1 - i, queryLabels);
        plot.Axes.Bottom.TickLabelStyle.Rotation = 90;
        plot.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleLeft;
        plot.Axes.Bottom.TickLabelStyle.FontSize = labelSize;
        plot.Axes.Left.TickLabelStyle.FontSize = labelSize;
        var longest = Math.Max(keyLabels.Take(keys).Select(l => Label(l).Length).DefaultIfEmpty(1).Max(), 1);
        plot.Axes.Bottom.MinimumSize = Math.Min(140, longest * labelSize * 0.65f + 30);
        plot.Axes.Margins(0, 0);
        return heatmap;
    }

    private static ScottPlot.TickGenerators.NumericManual Ticks(int count, Func<int, double> position, IReadOnlyList<string> labels)
    {
        var ticks = new ScottPlot.TickGenerators.NumericManual();
        // Past ~48 tokens labels overlap: label every n-th.
        var stride = Math.Max(1, (int)Math.Ceiling(count / 48.0));
        for (var i = 0; i < count; i++)
        {
            if (i % stride == 0)
                ticks.AddMajor(position(i), Label(labels[i]));
        }
        return ticks;
    }

    private static float LabelSize(int queries, int keys) => Math.Max(queries, keys) switch
    {
        <= 16 => 13,
        <= 32 => 11,
        _ => 9,
    };

    private static void Check(ReadOnlySpan<float> weights, int queries, int keys, IReadOnlyList<string> queryLabels, IReadOnlyList<string> keyLabels)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(queries);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(keys);
        ArgumentNullException.ThrowIfNull(queryLabels);
        ArgumentNullException.ThrowIfNull(keyLabels);
        if (weights.Length != queries * keys)
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"Attention weights have {weights.Length} values, expected [{queries}, {keys}] = {queries * keys}."), nameof(weights));
        if (queryLabels.Count != queries || keyLabels.Count != keys)
            throw new ArgumentException($"Labels: {queryLabels.Count} query and {keyLabels.Count} key labels for a [{queries}, {keys}] matrix.", nameof(queryLabels));
    }
}
