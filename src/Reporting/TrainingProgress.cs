using System.Diagnostics;
using System.Globalization;
using GpuTransformer.Training.Reporting;
using Spectre.Console;

namespace GpuTransformer.Reporting;

/// <summary>How the progress is shown.</summary>
public sealed record TrainingProgressOptions
{
    /// <summary>Live display (true), plain lines (false), or detect (null: live when stdout is an interactive terminal and <c>CI</c> is unset).</summary>
    public bool? Interactive { get; init; }

    /// <summary>Console for the live display (default <see cref="AnsiConsole.Console"/>).</summary>
    public IAnsiConsole? Console { get; init; }

    /// <summary>Writer for plain lines (default <see cref="System.Console.Out"/>).</summary>
    public TextWriter? PlainOutput { get; init; }

    /// <summary>Least time between two plain lines (the first and the last step always print).</summary>
    public TimeSpan PlainInterval { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Label before the numbers.</summary>
    public string Label { get; init; } = "train";
}

/// <summary>
/// Training progress: step/total, loss, tokens/s and ETA. In a terminal, a Spectre.Console live
/// progress bar; otherwise (CI logs, redirected output) plain lines such as
/// <c>train step 120/2000 (6.0%) loss 3.4121 val 3.5012 tok/s 12,345 eta 0:05:12</c>, at most one per
/// <see cref="TrainingProgressOptions.PlainInterval"/>. The ETA extrapolates the time per step of this
/// run (steps before the first report, e.g. of a resumed run, do not count).
/// </summary>
public static class TrainingProgress
{
    /// <summary>Runs <paramref name="body"/> (the training loop) with a progress display for <paramref name="totalSteps"/> steps.</summary>
    public static T Run<T>(long totalSteps, Func<ITrainingProgress, T> body, TrainingProgressOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(body);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(totalSteps);
        options ??= new TrainingProgressOptions();
        if (!(options.Interactive ?? IsInteractiveTerminal()))
            return body(new PlainProgress(totalSteps, options));

        var console = options.Console ?? AnsiConsole.Console;
        return console.Progress()
            .AutoClear(false)
            .HideCompleted(false)
            .Columns(new ProgressBarColumn(), new TaskDescriptionColumn { Alignment = Justify.Left })
            .Start(context =>
            {
                var task = context.AddTask(Markup.Escape(options.Label), maxValue: totalSteps);
                return body(new LiveProgress(totalSteps, task, console, options.Label));
            });
    }

    /// <summary>Runs <paramref name="body"/> with a progress display (no result).</summary>
    public static void Run(long totalSteps, Action<ITrainingProgress> body, TrainingProgressOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(body);
        Run(totalSteps, p =>
        {
            body(p);
            return 0;
        }, options);
    }

    /// <summary>Is stdout an interactive terminal (not redirected, not CI, not TERM=dumb)?</summary>
    internal static bool IsInteractiveTerminal() =>
        !System.Console.IsOutputRedirected
        && string.IsNullOrEmpty(Environment.GetEnvironmentVariable("CI"))
        && Environment.GetEnvironmentVariable("TERM") is not "dumb"
        && AnsiConsole.Profile.Capabilities.Interactive;

    /// <summary>The numbers of one update, as both displays show them.</summary>
    internal static string Describe(long totalSteps, ProgressUpdate u, TimeSpan? eta)
    {
        var c = CultureInfo.InvariantCulture;
        var text = string.Create(c, $"step {u.Step}/{totalSteps} ({100.0 * u.Step / totalSteps:F1}%) loss {u.Loss:F4}");
        if (u.ValLoss is { } val)
            text += string.Create(c, $" val {val:F4}");
        text += string.Create(c, $" tok/s {u.TokensPerSecond:N0}");
        if (eta is { } e)
            text += " eta " + FormatDuration(e);
        return text;
    }

    /// <summary>A duration as h:mm:ss (0:mm:ss under an hour).</summary>
    public static string FormatDuration(TimeSpan t) =>
        t.TotalHours >= 1
            ? string.Create(CultureInfo.InvariantCulture, $"{(int)t.TotalHours}:{t.Minutes:00}:{t.Seconds:00}")
            : string.Create(CultureInfo.InvariantCulture, $"0:{t.Minutes:00}:{t.Seconds:00}");

    /// <summary>Time per step measured since the first report.</summary>
    private sealed class EtaClock(long totalSteps)
    {
        private readonly Stopwatch clock = Stopwatch.StartNew();
        private long firstStep = -1;

        public TimeSpan? Eta(long step)
        {
            if (firstStep < 0)
            {
                firstStep = step;
                clock.Restart();
                return null;
            }
            var done = step - firstStep;
            return done <= 0 ? null : TimeSpan.FromTicks((long)(clock.Elapsed.Ticks / (double)done * Math.Max(0, totalSteps - step)));
        }
    }

    private sealed class PlainProgress(long totalSteps, TrainingProgressOptions options) : ITrainingProgress
    {
        private readonly TextWriter output = options.PlainOutput ?? System.Console.Out;
        private readonly EtaClock eta = new(totalSteps);
        private readonly Stopwatch sinceLine = new();

        public void Report(ProgressUpdate update)
        {
            var remaining = eta.Eta(update.Step);
            var due = !sinceLine.IsRunning || sinceLine.Elapsed >= options.PlainInterval || update.Step >= totalSteps;
            if (!due)
                return;
            output.WriteLine($"{options.Label} {Describe(totalSteps, update, remaining)}");
            output.Flush();
            sinceLine.Restart();
        }

        public void Log(string line)
        {
            output.WriteLine(line);
            output.Flush();
        }
    }

    private sealed class LiveProgress(long totalSteps, ProgressTask task, IAnsiConsole console, string label) : ITrainingProgress
    {
        private readonly EtaClock eta = new(totalSteps);

        public void Report(ProgressUpdate update)
        {
            task.Description = Markup.Escape($"{label} {Describe(totalSteps, update, eta.Eta(update.Step))}");
            task.Value = Math.Min(update.Step, totalSteps);
        }

        public void Log(string line) => console.MarkupLine(Markup.Escape(line));
    }
}
