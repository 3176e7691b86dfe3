using System.Text.Json;
using GpuTransformer.Reporting;
using GpuTransformer.Training.Reporting;

namespace GpuTransformer.Tests.Training;

public sealed class ReportingTests
{
    [Fact]
    public void Metrics_log_writes_csv_and_jsonl_flushed_per_line()
    {
        using var folder = new TempFolder();
        using (var log = MetricsLogger.InDirectory(folder.Path))
        {
            log.Log(new MetricsRecord(1, 2048, 5.5, 1e-4, 1.25, 12345.5, 0.5));
            // Readable before the logger is closed: each line is flushed.
            using (var reader = new StreamReader(new FileStream(log.CsvPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite)))
                Assert.Equal(2, reader.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
            log.Log(new MetricsRecord(2, 4096, double.NaN, 2e-4, 0.75, 13000, 1.0, ValLoss: 4.25, ValPerplexity: Math.Exp(4.25)));
        }

        var csv = File.ReadAllLines(Path.Combine(folder.Path, "metrics.csv"));
        Assert.Equal(
            [
                "step,tokens,loss,lr,grad_norm,tokens_per_s,elapsed_s,val_loss,val_ppl",
                "1,2048,5.5,0.0001,1.25,12345.5,0.5,,",
                $"2,4096,NaN,0.0002,0.75,13000,1,4.25,{Math.Exp(4.25):R}",
            ], csv);

        var jsonl = File.ReadAllLines(Path.Combine(folder.Path, "metrics.jsonl"));
        Assert.Equal("""{"step":1,"tokens":2048,"loss":5.5,"lr":0.0001,"grad_norm":1.25,"tokens_per_s":12345.5,"elapsed_s":0.5}""", jsonl[0]);
        using var second = JsonDocument.Parse(jsonl[1]);
        Assert.Equal(JsonValueKind.Null, second.RootElement.GetProperty("loss").ValueKind);
        Assert.Equal(4.25, second.RootElement.GetProperty("val_loss").GetDouble());

        var back = MetricsLogger.ReadJsonl(Path.Combine(folder.Path, "metrics.jsonl"));
        Assert.Equal(2, back.Count);
        Assert.Null(back[0].ValLoss);
        Assert.True(double.IsNaN(back[1].Loss));
        Assert.Equal(Math.Exp(4.25), back[1].ValPerplexity);

        // A resumed run appends without a second header.
        using (var log = MetricsLogger.InDirectory(folder.Path, append: true))
            log.Log(new MetricsRecord(3, 6144, 4.0, 3e-4, 0.5, 14000, 1.5));
        var appended = File.ReadAllLines(Path.Combine(folder.Path, "metrics.csv"));
        Assert.Equal(4, appended.Length);
        Assert.Single(appended, l => l.StartsWith("step,", StringComparison.Ordinal));
    }

    [Fact]
    public void Loss_curve_png_is_written_with_the_requested_size()
    {
        using var folder = new TempFolder();
        var records = Enumerable.Range(1, 200)
            .Select(s => new MetricsRecord(s, s * 512L, 3 + 4 * Math.Exp(-s / 40.0) + 0.2 * Math.Sin(s), 1e-3, 1, 1000, s, s % 50 == 0 ? 3.2 : null))
            .ToList();
        var path = Path.Combine(folder.Path, "plots", "loss.png");
        LossCurvePlot.Save(path, records, "test", baselineLoss: 5.0, width: 800, height: 500);
        Assert.Equal((800, 500), Fixtures.PngSize(path));
        Assert.True(new FileInfo(path).Length > 15_000, "a plot with lines, points, labels and a legend is not a few-byte image");

        var smooth = LossCurvePlot.Smooth([2.0, 4.0, 4.0], 0.5);
        Assert.Equal([2.0, (0.25 * 2 + 0.5 * 4) / 0.75, (0.125 * 2 + 0.25 * 4 + 0.5 * 4) / 0.875], smooth);
        Assert.Throws<ArgumentException>(() => LossCurvePlot.Save(path, [new MetricsRecord(1, 1, double.NaN, 0, 0, 0, 0)]));
    }

    [Fact]
    public void Attention_heatmaps_are_written_single_and_as_a_grid()
    {
        using var folder = new TempFolder();
        string[] tokens = ["The", " cat", " sat", "\n", "on", " the", " mat", "."];
        var t = tokens.Length;
        var weights = new float[t * t];
        for (var q = 0; q < t; q++)
        {
            for (var k = 0; k <= q; k++)
                weights[q * t + k] = 1f / (q + 1);
        }
        var single = Path.Combine(folder.Path, "attention.png");
        AttentionHeatmap.Save(single, weights, t, t, tokens, tokens, layer: 1, head: 2);
        var (width, height) = Fixtures.PngSize(single);
        Assert.True(width >= 420 && height >= 380, $"{width}×{height}");
        Assert.True(new FileInfo(single).Length > 10_000);

        var grid = Path.Combine(folder.Path, "grid.png");
        AttentionHeatmap.SaveGrid(grid, Enumerable.Repeat(weights, 4).ToList(), t, t, tokens, tokens, layer: 0);
        var (gridWidth, gridHeight) = Fixtures.PngSize(grid);
        Assert.True(gridWidth >= 2 * 260 && gridHeight >= 2 * 240, $"{gridWidth}×{gridHeight}");

        Assert.Equal("·cat", AttentionHeatmap.Label(" cat"));
        Assert.Equal("\\n", AttentionHeatmap.Label("\n"));
        Assert.Equal("abcdefghijk…", AttentionHeatmap.Label("abcdefghijklmnop"));
        Assert.Throws<ArgumentException>(() => AttentionHeatmap.Save(single, weights, t, t - 1, tokens, tokens, 0, 0));
    }

    [Fact]
    public void Plain_progress_prints_step_loss_throughput_and_eta_lines()
    {
        var output = new StringWriter();
        var options = new TrainingProgressOptions { Interactive = false, PlainOutput = output, PlainInterval = TimeSpan.Zero };
        var result = TrainingProgress.Run(4, progress =>
        {
            for (var step = 1; step <= 4; step++)
            {
                progress.Report(new ProgressUpdate(step, 5.0 / step, 1234.4, step == 4 ? 1.5 : null));
                if (step == 2)
                    progress.Log("eval: val loss 2.0000");
            }
            return 42;
        }, options);
        Assert.Equal(42, result);
        var lines = output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(5, lines.Length);
        Assert.Equal("train step 1/4 (25.0%) loss 5.0000 tok/s 1,234", lines[0]);
        Assert.Equal("eval: val loss 2.0000", lines[2]);
        Assert.Matches(@"^train step 4/4 \(100\.0%\) loss 1\.2500 val 1\.5000 tok/s 1,234 eta 0:00:00$", lines[4]);

        // With a long interval only the first and the last step print.
        var sparse = new StringWriter();
        TrainingProgress.Run(100, p =>
        {
            for (var step = 1; step <= 100; step++)
                p.Report(new ProgressUpdate(step, 1, 1));
        }, options with { PlainOutput = sparse, PlainInterval = TimeSpan.FromHours(1) });
        Assert.Equal(2, sparse.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
    }

    [Fact]
    public void Live_progress_renders_through_spectre()
    {
        var output = new StringWriter();
        var console = Spectre.Console.AnsiConsole.Create(new Spectre.Console.AnsiConsoleSettings
        {
            Out = new Spectre.Console.AnsiConsoleOutput(output),
            Ansi = Spectre.Console.AnsiSupport.Yes,
            Interactive = Spectre.Console.InteractionSupport.Yes,
        });
        TrainingProgress.Run(3, p =>
        {
            for (var step = 1; step <= 3; step++)
                p.Report(new ProgressUpdate(step, 2.5, 100));
            p.Log("checkpoint saved");
        }, new TrainingProgressOptions { Interactive = true, Console = console });
        var text = output.ToString();
        Assert.Contains("checkpoint saved", text);
        Assert.Contains("step 3/3", text);
    }
}
