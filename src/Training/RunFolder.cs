using GpuTransformer.Training.Reporting;

namespace GpuTransformer.Training;

/// <summary>
/// Where a training run writes (<c>train --out</c>): a folder never shared by two runs unless the user
/// says so. A named folder that already holds a run is refused unless forced; a default folder is
/// claimed atomically (<see cref="CreateUnique"/>), so two runs started in the same second get two folders.
/// </summary>
internal static class RunFolder
{
    /// <summary>The metrics CSV: the file that claims a new folder (the metrics log replaces it).</summary>
    public const string MetricsCsv = "metrics.csv";

    /// <summary>The metrics JSON lines: the run's history, read back on resume.</summary>
    public const string MetricsJsonl = "metrics.jsonl";

    /// <summary>Files whose presence marks a folder as holding a run.</summary>
    public static readonly IReadOnlyList<string> RunFiles = [Checkpoint.FileName, MetricsCsv, MetricsJsonl, "summary.json"];

    /// <summary>The run files <paramref name="folder"/> holds (none when it does not exist).</summary>
    public static IReadOnlyList<string> ExistingRunFiles(string folder)
    {
        ArgumentNullException.ThrowIfNull(folder);
        return [.. RunFiles.Where(name => File.Exists(Path.Combine(folder, name)))];
    }

    /// <summary>Refuses <paramref name="folder"/> when it already holds a run, unless <paramref name="force"/> (check before any long work).</summary>
    /// <exception cref="IOException"><paramref name="folder"/> already holds a run and <paramref name="force"/> is false.</exception>
    public static void RequireNoRun(string folder, bool force)
    {
        ArgumentNullException.ThrowIfNull(folder);
        var full = Path.GetFullPath(folder);
        if (!force && ExistingRunFiles(full) is { Count: > 0 } files)
        {
            throw new IOException(
                $"--out '{full}' already holds a run ({string.Join(", ", files)}): pass --force to replace it, --resume to continue it, or choose another folder.");
        }
    }

    /// <summary>Creates <paramref name="folder"/> for a new run (or a resumed run moving there), after <see cref="RequireNoRun"/>.</summary>
    /// <exception cref="IOException"><paramref name="folder"/> already holds a run and <paramref name="force"/> is false.</exception>
    public static string Create(string folder, bool force)
    {
        RequireNoRun(folder, force);
        var full = Path.GetFullPath(folder);
        Directory.CreateDirectory(full);
        return full;
    }

    /// <summary>
    /// Creates and claims <c>&lt;parent&gt;/&lt;name&gt;</c>, or <c>&lt;name&gt;-2</c>, <c>-3</c>, … when
    /// that is taken: a folder is claimed by creating its <see cref="MetricsCsv"/> exclusively, so
    /// concurrent runs (other processes included) never share one.
    /// </summary>
    public static string CreateUnique(string parent, string name)
    {
        ArgumentNullException.ThrowIfNull(parent);
        ArgumentNullException.ThrowIfNull(name);
        for (var i = 1; ; i++)
        {
            var folder = Path.GetFullPath(Path.Combine(parent, i == 1 ? name : $"{name}-{i}"));
            if (Directory.Exists(folder))
                continue;
            Directory.CreateDirectory(folder);
            try
            {
                using (new FileStream(Path.Combine(folder, MetricsCsv), FileMode.CreateNew, FileAccess.Write))
                {
                }
                return folder;
            }
            catch (IOException) when (File.Exists(Path.Combine(folder, MetricsCsv)))
            {
                // Another run claimed it between the check and the claim: take the next name.
            }
        }
    }

    /// <summary>The run's metrics so far (its <see cref="MetricsJsonl"/>; none when missing); a last line cut short by a crash is dropped.</summary>
    /// <exception cref="InvalidDataException">The log is not a metrics log.</exception>
    public static List<MetricsRecord> ReadHistory(string folder)
    {
        ArgumentNullException.ThrowIfNull(folder);
        var path = Path.Combine(folder, MetricsJsonl);
        if (!File.Exists(path))
            return [];
        var lines = File.ReadAllLines(path).Where(l => !string.IsNullOrWhiteSpace(l)).ToList();
        try
        {
            return MetricsLogger.ParseJsonLines(lines);
        }
        catch (System.Text.Json.JsonException) when (lines.Count > 0)
        {
            try
            {
                return MetricsLogger.ParseJsonLines(lines[..^1]);
            }
            catch (System.Text.Json.JsonException e)
            {
                throw new InvalidDataException($"'{path}' is not a metrics log ({e.Message}); move it away to resume without the history.", e);
            }
        }
    }
}
