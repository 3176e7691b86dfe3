using System.Globalization;
using GpuTransformer.Training.Scoring;
using ScottPlot;

namespace GpuTransformer.Reporting;

/// <summary>
/// The <c>score --picture</c> PNG: per scored text a heat strip of its next-token distributions.
/// Column i is the i-th scored token (its text along the bottom); going down, the model's k most
/// likely candidates at that position, each cell coloured by its probability and labelled with the
/// candidate; the actual token's cell is outlined in red, or, when the actual token is not among
/// the k, a red cell under the strip gives its rank. Several texts stack, one strip each, on one
/// colour scale. Long texts show their first <see cref="MaxPositions"/> positions (the title says so).
/// </summary>
public static class NextTokenPicture
{
    /// <summary>Most positions drawn per text.</summary>
    public const int MaxPositions = 96;

    private const int Cell = 34;

    /// <summary>Writes the picture of <paramref name="scores"/> (labelled with <paramref name="titles"/>, one each) to <paramref name="path"/>.</summary>
    public static void Save(string path, IReadOnlyList<SequenceScore> scores, IReadOnlyList<string> titles)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(scores);
        ArgumentNullException.ThrowIfNull(titles);
        if (scores.Count == 0 || titles.Count != scores.Count)
            throw new ArgumentException($"{scores.Count} scores and {titles.Count} titles: one title per score, at least one.", nameof(titles));
        var k = scores.Max(s => s.Tokens.Max(t => t.TopK.Count));
        var multiplot = new Multiplot();
        while (multiplot.Count() > 0)
            multiplot.RemovePlot(multiplot.GetPlot(0));
        multiplot.Layout = new ScottPlot.MultiplotLayouts.Grid(scores.Count, 1);
        for (var i = 0; i < scores.Count; i++)
            Draw(multiplot.AddPlot(), scores[i], titles[i], k);
        var columns = scores.Max(s => Math.Min(s.Tokens.Count, MaxPositions));
        var full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        multiplot.SavePng(full, Math.Max(640, (columns * Cell) + 180), scores.Count * ((k + 1) * Cell + 190));
    }

    private static void Draw(Plot plot, SequenceScore score, string title, int k)
    {
        var c = CultureInfo.InvariantCulture;
        var n = Math.Min(score.Tokens.Count, MaxPositions);
        // Row 0: the most likely candidate (drawn on top), row k: the actual token when it is not among the k.
        var cells = new double[k + 1, n];
        for (var column = 0; column < n; column++)
        {
            var token = score.Tokens[column];
            for (var row = 0; row <= k; row++)
                cells[row, column] = row < token.TopK.Count ? token.TopK[row].Probability : double.NaN;
            if (token.Rank > token.TopK.Count)
                cells[k, column] = token.Probability;
        }
        var heatmap = plot.Add.Heatmap(cells);
        heatmap.Colormap = new ScottPlot.Colormaps.Viridis();
        heatmap.ManualRange = new ScottPlot.Range(0, 1);
        heatmap.NaNCellColor = Colors.White;
        plot.Add.ColorBar(heatmap).Label = "probability";

        for (var column = 0; column < n; column++)
        {
            var token = score.Tokens[column];
            for (var row = 0; row < token.TopK.Count; row++)
            {
                var candidate = token.TopK[row];
                Label(plot, AttentionHeatmap.Label(candidate.Text, 4), column, Y(row, k), candidate.Probability);
                if (candidate.Id == token.Id)
                    Outline(plot, column, Y(row, k));
            }
            if (token.Rank > token.TopK.Count)
            {
                Label(plot, string.Create(c, $"#{token.Rank}"), column, Y(k, k), token.Probability);
                Outline(plot, column, Y(k, k));
            }
        }

        var bottom = new ScottPlot.TickGenerators.NumericManual();
        for (var column = 0; column < n; column++)
            bottom.AddMajor(column, AttentionHeatmap.Label(score.Tokens[column].Text, 6));
        plot.Axes.Bottom.TickGenerator = bottom;
        plot.Axes.Bottom.TickLabelStyle.FontSize = 13;
        if (score.Tokens.Take(n).Any(t => AttentionHeatmap.Label(t.Text, 6).Length > 2))
        {
            // Word pieces read better turned; single characters stay upright.
            plot.Axes.Bottom.TickLabelStyle.Rotation = 90;
            plot.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleLeft;
            plot.Axes.Bottom.MinimumSize = 60;
        }
        var left = new ScottPlot.TickGenerators.NumericManual();
        for (var row = 0; row < k; row++)
            left.AddMajor(Y(row, k), string.Create(c, $"#{row + 1}"));
        left.AddMajor(Y(k, k), "actual");
        plot.Axes.Left.TickGenerator = left;
        plot.Axes.Margins(0, 0);
        var cut = n < score.Tokens.Count ? string.Create(c, $", first {n} of {score.Tokens.Count} tokens") : "";
        plot.Title(string.Create(c, $"{title}: ln P = {score.TotalLogProbability:F2}, perplexity {score.Perplexity:F2}{cut}"), size: 14);
        plot.XLabel("each column: the actual token (below, red box above) and the model's top candidates for it", size: 12);
    }

    /// <summary>The heatmap centres cell (row, column) of its k + 1 rows on x = column, y = k − row (row 0 on top).</summary>
    private static double Y(int row, int k) => k - row;

    private static void Label(Plot plot, string text, int column, double y, double probability)
    {
        var label = plot.Add.Text(text, column, y);
        label.LabelFontSize = 10;
        label.LabelAlignment = Alignment.MiddleCenter;
        label.LabelFontColor = probability > 0.55 ? Colors.Black : Colors.White;
    }

    private static void Outline(Plot plot, int column, double y)
    {
        var box = plot.Add.Rectangle(column - 0.46, column + 0.46, y - 0.46, y + 0.46);
        box.FillStyle.Color = Colors.Transparent;
        box.LineStyle.Color = Colors.Red;
        box.LineStyle.Width = 2.5f;
    }
}
