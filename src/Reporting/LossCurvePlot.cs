using GpuTransformer.Training.Reporting;
using ScottPlot;

namespace GpuTransformer.Reporting;

/// <summary>
/// The loss curve PNG: raw training loss (faint), its exponential moving average (bias-corrected,
/// as TensorBoard smooths), validation loss as points, and optionally a horizontal reference line
/// (the unigram baseline). X: optimizer step; Y: loss in nats/token.
/// </summary>
public static class LossCurvePlot
{
    /// <summary>Writes the PNG to <paramref name="path"/>.</summary>
    /// <param name="path">Output file (folder created).</param>
    /// <param name="records">The log (see <see cref="MetricsLogger.ReadJsonl"/>); non-finite losses are skipped.</param>
    /// <param name="title">Plot title.</param>
    /// <param name="smoothing">EMA weight of the past, in [0, 1).</param>
    /// <param name="baselineLoss">A reference loss to draw (e.g. <c>UnigramBaseline.CrossEntropy</c>), or null.</param>
    /// <param name="baselineLabel">Legend text of the reference line.</param>
    /// <param name="width">Picture width in pixels.</param>
    /// <param name="height">Picture height in pixels.</param>
    public static void Save(string path, IReadOnlyList<MetricsRecord> records, string title = "Training loss",
        double smoothing = 0.9, double? baselineLoss = null, string baselineLabel = "unigram baseline", int width = 1000, int height = 600)
    {
        ArgumentNullException.ThrowIfNull(records);
        if (!(smoothing is >= 0 and < 1))
            throw new ArgumentOutOfRangeException(nameof(smoothing), smoothing, "Smoothing must be in [0, 1).");
        var train = records.Where(r => double.IsFinite(r.Loss)).ToList();
        var valid = records.Where(r => r.ValLoss is { } v && double.IsFinite(v)).ToList();
        if (train.Count == 0 && valid.Count == 0)
            throw new ArgumentException("No finite training or validation loss to plot.", nameof(records));

        var plot = new Plot();
        if (train.Count > 0)
        {
            var steps = train.Select(r => (double)r.Step).ToArray();
            var raw = plot.Add.ScatterLine(steps, train.Select(r => r.Loss).ToArray());
            raw.Color = Colors.SteelBlue.WithAlpha(0.3);
            raw.LineWidth = 1;
            raw.LegendText = "train loss";
            var smooth = plot.Add.ScatterLine(steps, Smooth(train.Select(r => r.Loss).ToArray(), smoothing));
            smooth.Color = Colors.SteelBlue;
            smooth.LineWidth = 2.5f;
            smooth.LegendText = $"train loss (EMA {smoothing:0.##})";
        }
        if (valid.Count > 0)
        {
            var points = plot.Add.ScatterLine(valid.Select(r => (double)r.Step).ToArray(), valid.Select(r => r.ValLoss!.Value).ToArray());
            points.Color = Colors.OrangeRed;
            points.LineWidth = 1;
            points.MarkerSize = 9;
            points.MarkerShape = MarkerShape.FilledCircle;
            points.LegendText = "validation loss";
        }
        if (baselineLoss is { } baseline && double.IsFinite(baseline))
        {
            var line = plot.Add.HorizontalLine(baseline);
            line.Color = Colors.Gray;
            line.LinePattern = LinePattern.Dashed;
            line.LineWidth = 1.5f;
            line.LegendText = $"{baselineLabel} ({baseline:F2})";
        }
        plot.Title(title);
        plot.XLabel("step");
        plot.YLabel("loss (nats/token)");
        plot.ShowLegend(Alignment.UpperRight);
        PngFiles.Save(plot, path, width, height);
    }

    /// <summary>Bias-corrected exponential moving average: sₜ = (β sₜ₋₁ + (1 − β) xₜ) / (1 − βᵗ).</summary>
    internal static double[] Smooth(IReadOnlyList<double> values, double beta)
    {
        ArgumentNullException.ThrowIfNull(values);
        var result = new double[values.Count];
        var average = 0.0;
        var weight = 1.0;
        for (var i = 0; i < values.Count; i++)
        {
            average = beta * average + (1 - beta) * values[i];
            weight *= beta;
            result[i] = average / (1 - weight);
        }
        return result;
    }
}

internal static class PngFiles
{
    public static void Save(Plot plot, string path, int width, int height)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 50);
        ArgumentOutOfRangeException.ThrowIfLessThan(height, 50);
        var full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        plot.SavePng(full, width, height);
    }
}
