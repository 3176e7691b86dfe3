using System.Globalization;
using GpuTransformer.Kernels.Profiling;
using ScottPlot;

namespace GpuTransformer.Reporting;

/// <summary>
/// The profile's bar chart PNG (drawing only; the data is <see cref="ProfileReport"/>): one
/// horizontal bar per kernel family and host-side row, slowest at the top, its length the
/// milliseconds per step, split into forward, backward, optimizer and the rest.
/// </summary>
public static class ProfileChart
{
    /// <summary>Writes the PNG to <paramref name="path"/> (folder created).</summary>
    public static void Save(string path, ProfileReport report, int width = 1000, int height = 0)
    {
        ArgumentNullException.ThrowIfNull(report);
        var rows = report.ByFamily().Where(r => r.Seconds > 0).OrderBy(r => r.Seconds).ToList();
        if (rows.Count == 0)
            throw new ArgumentException("The profile has no timed rows to draw.", nameof(report));

        var parts = new (string Name, Color Color, Func<ProfileRow, double> Share)[]
        {
            ("forward", Colors.SteelBlue, r => r.ForwardShare),
            ("backward", Colors.OrangeRed, r => r.BackwardShare),
            ("optimizer", Colors.SeaGreen, r => r.OptimizerShare),
            ("other / host", Colors.Gray, r => Math.Max(0, 1 - r.ForwardShare - r.BackwardShare - r.OptimizerShare)),
        };
        var plot = new Plot();
        var bars = new List<Bar>();
        for (var i = 0; i < rows.Count; i++)
        {
            var perStep = 1e3 * rows[i].SecondsPerStep;
            var start = 0.0;
            foreach (var part in parts)
            {
                var length = perStep * part.Share(rows[i]);
                if (length <= 0)
                    continue;
                bars.Add(new Bar { Position = i, ValueBase = start, Value = start + length, FillColor = part.Color, LineWidth = 0 });
                start += length;
            }
        }
        var barPlot = plot.Add.Bars(bars);
        barPlot.Horizontal = true;
        foreach (var part in parts)
            plot.Legend.ManualItems.Add(new LegendItem { LabelText = part.Name, FillColor = part.Color });
        plot.ShowLegend(Alignment.LowerRight);
        plot.Axes.Left.SetTicks(
            [.. Enumerable.Range(0, rows.Count).Select(i => (double)i)],
            [.. rows.Select(r => string.Create(CultureInfo.InvariantCulture, $"{r.Label} ({100 * r.Share:F1} %)"))]);
        plot.Axes.Margins(left: 0, bottom: 0.02);
        plot.XLabel($"ms per {report.StepUnit} (profiled; {1e3 * report.MeasuredSeconds / Math.Max(1, report.Steps):F1} ms measured)");
        plot.Title(report.Title, size: 13);
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        plot.SavePng(path, width, height > 0 ? height : 160 + (28 * rows.Count));
    }
}
