using System.Globalization;
using System.Text;
using System.Text.Json;

namespace GpuTransformer.Training.Reporting;

/// <summary>One line of the training log. Validation fields are null on steps without an evaluation.</summary>
/// <param name="Step">Optimizer step (1-based).</param>
/// <param name="Tokens">Training tokens seen so far.</param>
/// <param name="Loss">Training loss of this step, nats/token.</param>
/// <param name="LearningRate">Learning rate used by this step.</param>
/// <param name="GradNorm">Global gradient norm before clipping.</param>
/// <param name="TokensPerSecond">Training throughput.</param>
/// <param name="ElapsedSeconds">Wall time since training started.</param>
/// <param name="ValLoss">Validation loss, nats/token.</param>
/// <param name="ValPerplexity">exp(ValLoss).</param>
public sealed record MetricsRecord(
    long Step,
    long Tokens,
    double Loss,
    double LearningRate,
    double GradNorm,
    double TokensPerSecond,
    double ElapsedSeconds,
    double? ValLoss = null,
    double? ValPerplexity = null);

/// <summary>
/// Writes <see cref="MetricsRecord"/>s as CSV (header <see cref="CsvHeader"/>, empty cells for absent
/// validation values, <c>NaN</c>/<c>Infinity</c> written as such) and as JSON Lines (snake_case keys as in
/// the CSV header, absent validation keys left out, non-finite numbers as null). Invariant culture,
/// round-trip precision. Each record is flushed to both files before <see cref="Log"/> returns, so a
/// crash loses nothing written and <c>tail -f</c> works. With <c>append</c>, a resumed run continues
/// existing files (the header is written only to an empty CSV).
/// </summary>
public sealed class MetricsLogger : IDisposable
{
    /// <summary>The CSV header line.</summary>
    internal const string CsvHeader = "step,tokens,loss,lr,grad_norm,tokens_per_s,elapsed_s,val_loss,val_ppl";

    private readonly StreamWriter csv;
    private readonly StreamWriter jsonl;

    /// <param name="csvPath">CSV file (created with its folder).</param>
    /// <param name="jsonlPath">JSONL file (created with its folder).</param>
    /// <param name="append">Continue existing files instead of replacing them.</param>
    public MetricsLogger(string csvPath, string jsonlPath, bool append = false)
    {
        CsvPath = Path.GetFullPath(csvPath);
        JsonlPath = Path.GetFullPath(jsonlPath);
        Directory.CreateDirectory(Path.GetDirectoryName(CsvPath)!);
        Directory.CreateDirectory(Path.GetDirectoryName(JsonlPath)!);
        var csvHasContent = append && File.Exists(CsvPath) && new FileInfo(CsvPath).Length > 0;
        csv = new StreamWriter(CsvPath, append, new UTF8Encoding(false)) { NewLine = "\n" };
        jsonl = new StreamWriter(JsonlPath, append, new UTF8Encoding(false)) { NewLine = "\n" };
        if (!csvHasContent)
        {
            csv.WriteLine(CsvHeader);
            csv.Flush();
        }
    }

    /// <summary>Creates <c>metrics.csv</c> and <c>metrics.jsonl</c> in <paramref name="directory"/>.</summary>
    public static MetricsLogger InDirectory(string directory, bool append = false) =>
        new(Path.Combine(directory, "metrics.csv"), Path.Combine(directory, "metrics.jsonl"), append);

    /// <summary>The CSV log's path.</summary>
    public string CsvPath { get; }

    /// <summary>The JSON-lines log's path.</summary>
    public string JsonlPath { get; }

    /// <summary>Appends <paramref name="record"/> to both files and flushes them.</summary>
    public void Log(MetricsRecord record)
    {
        ArgumentNullException.ThrowIfNull(record);
        csv.WriteLine(ToCsv(record));
        csv.Flush();
        jsonl.WriteLine(ToJsonLine(record));
        jsonl.Flush();
    }

    /// <summary>The CSV line of <paramref name="r"/> (no newline).</summary>
    internal static string ToCsv(MetricsRecord r)
    {
        ArgumentNullException.ThrowIfNull(r);
        static string F(double v) => v.ToString("R", CultureInfo.InvariantCulture);
        static string O(double? v) => v is { } x ? F(x) : "";
        return string.Join(',',
            r.Step.ToString(CultureInfo.InvariantCulture), r.Tokens.ToString(CultureInfo.InvariantCulture),
            F(r.Loss), F(r.LearningRate), F(r.GradNorm), F(r.TokensPerSecond), F(r.ElapsedSeconds), O(r.ValLoss), O(r.ValPerplexity));
    }

    /// <summary>The JSON line of <paramref name="r"/> (no newline).</summary>
    internal static string ToJsonLine(MetricsRecord r)
    {
        ArgumentNullException.ThrowIfNull(r);
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            static void Number(Utf8JsonWriter w, string name, double v)
            {
                if (double.IsFinite(v))
                    w.WriteNumber(name, v);
                else
                    w.WriteNull(name);
            }
            json.WriteStartObject();
            json.WriteNumber("step", r.Step);
            json.WriteNumber("tokens", r.Tokens);
            Number(json, "loss", r.Loss);
            Number(json, "lr", r.LearningRate);
            Number(json, "grad_norm", r.GradNorm);
            Number(json, "tokens_per_s", r.TokensPerSecond);
            Number(json, "elapsed_s", r.ElapsedSeconds);
            if (r.ValLoss is { } valLoss)
                Number(json, "val_loss", valLoss);
            if (r.ValPerplexity is { } valPpl)
                Number(json, "val_ppl", valPpl);
            json.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    /// <summary>Reads a JSONL log back (for plots and resumed runs); null numbers read as NaN.</summary>
    public static List<MetricsRecord> ReadJsonl(string path) => ParseJsonLines(File.ReadLines(path));

    /// <summary>Parses JSON lines written by <see cref="ToJsonLine"/> (blank lines skipped); null numbers read as NaN.</summary>
    internal static List<MetricsRecord> ParseJsonLines(IEnumerable<string> lines)
    {
        ArgumentNullException.ThrowIfNull(lines);
        var records = new List<MetricsRecord>();
        foreach (var line in lines)
        {
            if (string.IsNullOrWhiteSpace(line))
                continue;
            using var doc = JsonDocument.Parse(line);
            var e = doc.RootElement;
            double D(string name) => e.TryGetProperty(name, out var p) && p.ValueKind == JsonValueKind.Number ? p.GetDouble() : double.NaN;
            double? N(string name) => e.TryGetProperty(name, out _) ? D(name) : null;
            records.Add(new MetricsRecord(
                e.GetProperty("step").GetInt64(), e.GetProperty("tokens").GetInt64(),
                D("loss"), D("lr"), D("grad_norm"), D("tokens_per_s"), D("elapsed_s"), N("val_loss"), N("val_ppl")));
        }
        return records;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        csv.Dispose();
        jsonl.Dispose();
    }
}
