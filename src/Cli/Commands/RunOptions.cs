using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;

namespace GpuTransformer.Cli.Commands;

/// <summary>
/// The one vocabulary of the commands that train (<c>train</c>, <c>translate</c>): the same word
/// for the same thing (<c>--d-model</c>, <c>--d-ff</c>, <c>--steps</c>, <c>--time-limit 7m</c>,
/// <c>--resume PATH</c>, <c>--out</c>), the same parsing of durations, and the same Ctrl+C.
/// </summary>
internal static class RunOptions
{
    /// <summary><c>--d-model</c>: model width d_model (or <paramref name="description"/>).</summary>
    public static Option<T> DModel<T>(string description = "Model width d_model") => new("--d-model") { Description = description };

    /// <summary><c>--heads</c>: attention heads (must divide d_model) (or <paramref name="description"/>).</summary>
    public static Option<T> Heads<T>(string description = "Attention heads (must divide d_model)") => new("--heads") { Description = description };

    /// <summary><c>--layers</c>: layers (or <paramref name="description"/>).</summary>
    public static Option<T> Layers<T>(string description = "Layers") => new("--layers") { Description = description };

    /// <summary><c>--d-ff</c>: feed-forward width dim_feedforward (or <paramref name="description"/>).</summary>
    public static Option<T> FeedForward<T>(string description = "Feed-forward width dim_feedforward") => new("--d-ff") { Description = description };

    /// <summary><c>--batch-size</c>: sequences per micro-batch (or <paramref name="description"/>).</summary>
    public static Option<T> BatchSize<T>(string description = "Sequences per micro-batch") => new("--batch-size") { Description = description };

    /// <summary><c>--steps</c>: optimizer steps of the whole run (or <paramref name="description"/>).</summary>
    public static Option<T> Steps<T>(string description = "Optimizer steps of the whole run") => new("--steps") { Description = description };

    /// <summary><c>--lr</c>: peak learning rate (AdamW) (or <paramref name="description"/>).</summary>
    public static Option<T> LearningRate<T>(string description = "Peak learning rate (AdamW)") => new("--lr") { Description = description };

    /// <summary><c>--warmup</c>: linear warmup steps (or <paramref name="description"/>).</summary>
    public static Option<T> Warmup<T>(string description = "Linear warmup steps") => new("--warmup") { Description = description };

    /// <summary><c>--eval-every</c>: steps between validation evaluations (or <paramref name="description"/>).</summary>
    public static Option<T> EvaluateEvery<T>(string description = "Steps between validation evaluations") => new("--eval-every") { Description = description };

    /// <summary><c>--seed</c>: seed of the initial weights (or <paramref name="description"/>).</summary>
    public static Option<T> Seed<T>(string description = "Seed of the initial weights") => new("--seed") { Description = description };

    /// <summary>Sets the value an option has when it is not given.</summary>
    public static Option<T> Default<T>(this Option<T> option, T value)
    {
        ArgumentNullException.ThrowIfNull(option);
        option.DefaultValueFactory = _ => value;
        return option;
    }

    /// <summary><c>--out</c>: the run folder.</summary>
    public static Option<string?> Out(string description) => new("--out", "-o") { Description = description, HelpName = "folder" };

    /// <summary><c>--resume PATH</c>: continue the run of a checkpoint.</summary>
    public static Option<string?> Resume() =>
        new("--resume") { Description = "Continue the run of this checkpoint (a file or a run folder) exactly where it stopped", HelpName = "path" };

    /// <summary><c>--time-limit</c>: a duration (<see cref="ParseDuration"/>), checked when parsed.</summary>
    /// <param name="defaultValue">The default as typed (null: no limit).</param>
    public static Option<string?> TimeLimit(string? defaultValue = null)
    {
        var option = new Option<string?>("--time-limit")
        {
            Description = "Training time budget, e.g. 90s, 7m, 1h (none: no limit): training ends early with a final evaluation and checkpoint",
            HelpName = "duration",
        };
        if (defaultValue is not null)
            option.DefaultValueFactory = _ => defaultValue;
        option.Validators.Add(r => Check(r, () => ParseDuration(r.GetValueOrDefault<string?>())));
        return option;
    }

    /// <summary>The longest duration accepted: a year, far beyond any run and far inside <see cref="TimeSpan"/>'s range.</summary>
    public static readonly TimeSpan MaxDuration = TimeSpan.FromDays(365);

    /// <summary>"90", "90s", "7m", "1.5h", "0:07:00" → a duration up to <see cref="MaxDuration"/>; null, "none" or "0" → none.</summary>
    public static TimeSpan? ParseDuration(string? text)
    {
        if (string.IsNullOrWhiteSpace(text) || text.Trim() is "none" or "0")
            return null;
        var t = text.Trim().ToLowerInvariant();
        if (t.Contains(':', StringComparison.Ordinal) && TimeSpan.TryParse(t, CultureInfo.InvariantCulture, out var span) && span > TimeSpan.Zero)
            return span <= MaxDuration ? span : throw TooLong(text);
        var (number, unit) = t[^1] switch
        {
            's' => (t[..^1], 1.0),
            'm' => (t[..^1], 60.0),
            'h' => (t[..^1], 3600.0),
            _ => (t, 1.0),
        };
        if (double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) && value > 0 && double.IsFinite(value))
            return value * unit <= MaxDuration.TotalSeconds ? TimeSpan.FromSeconds(value * unit) : throw TooLong(text);
        throw new ArgumentException($"Cannot read the duration '{text}': use seconds (90, 90s), minutes (7m), hours (1.5h), h:mm:ss, or none.");
    }

    private static ArgumentException TooLong(string text) =>
        new($"The duration '{text}' is longer than {MaxDuration.TotalDays:F0} days: give a shorter limit, or none.");

    /// <summary>Runs a parse-time check: its ArgumentException becomes the option's usage error.</summary>
    public static void Check(OptionResult result, Action check)
    {
        try
        {
            check();
        }
        catch (ArgumentException e)
        {
            result.AddError(e.Message.Split(" (Parameter", 2)[0]);
        }
    }

    /// <summary>
    /// Runs <paramref name="train"/> with a token that the first Ctrl+C cancels (the run stops after
    /// the current step with a final evaluation and checkpoint); a second Ctrl+C aborts.
    /// </summary>
    public static T WithCtrlC<T>(CliContext context, Func<CancellationToken, T> train)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(train);
        using var cancellation = new CancellationTokenSource();
        void OnCancel(object? sender, ConsoleCancelEventArgs e)
        {
            if (cancellation.IsCancellationRequested)
                return;
            e.Cancel = true;
            cancellation.Cancel();
            context.Error.WriteLine("Stopping after this step with a final evaluation and checkpoint (Ctrl+C again to abort)…");
        }
        Console.CancelKeyPress += OnCancel;
        try
        {
            return train(cancellation.Token);
        }
        finally
        {
            Console.CancelKeyPress -= OnCancel;
        }
    }
}
