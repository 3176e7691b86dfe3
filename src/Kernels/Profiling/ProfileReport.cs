using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace GpuTransformer.Kernels.Profiling;

/// <summary>One timed row of a profile: a kernel family's entry point (or a host-side kind) in one phase and layer.</summary>
/// <param name="Kind">Kernel, upload, read-back, synchronization or host.</param>
/// <param name="Phase">Forward, backward, optimizer, decode or other.</param>
/// <param name="Layer">The layer scope it ran in ("" outside any).</param>
/// <param name="Family">The kernel family (<c>Matmul</c>, <c>Attention</c>, …), or the host kind's name.</param>
/// <param name="Kernel">The entry point (<c>forward</c>, <c>backward dK/dV</c>, …) or what was copied.</param>
/// <param name="Calls">Scopes counted.</param>
/// <param name="Seconds">Their total time.</param>
/// <param name="Flops">Floating-point operations they did (0 where the family does not say).</param>
/// <param name="Bytes">Bytes they read and wrote at least once (0 where the family does not say).</param>
public sealed record ProfileEntry(
    ProfileRowKind Kind, ProfilePhase Phase, string Layer, string Family, string Kernel, long Calls, double Seconds, double Flops, double Bytes);

/// <summary>A row of a profile table: entries summed under one label.</summary>
/// <param name="Label">The family, layer or phase.</param>
/// <param name="Calls">Scopes counted.</param>
/// <param name="Seconds">Total time.</param>
/// <param name="SecondsPerStep">Total time over the profile's steps.</param>
/// <param name="Share">Fraction of the measured time.</param>
/// <param name="GflopsPerSecond">Achieved GFLOP/s, or null where no work was reported.</param>
/// <param name="GigabytesPerSecond">Achieved GB/s (10⁹ bytes), or null where no traffic was reported.</param>
/// <param name="ForwardShare">Share of the row's time in the forward phase.</param>
/// <param name="BackwardShare">Share of the row's time in the backward phase.</param>
/// <param name="OptimizerShare">Share of the row's time in the optimizer phase.</param>
public sealed record ProfileRow(
    string Label, long Calls, double Seconds, double SecondsPerStep, double Share, double? GflopsPerSecond, double? GigabytesPerSecond,
    double ForwardShare, double BackwardShare, double OptimizerShare);

/// <summary>
/// What a <see cref="KernelProfiler"/> measured: the entries, the measured wall time of its
/// windows, and tables by kernel family (with host-side rows), by layer and by phase, each adding
/// up to <see cref="MeasuredSeconds"/> (the host row is the remainder, so a negative host row
/// would mean double counting).
/// </summary>
/// <param name="Title">What was profiled.</param>
/// <param name="Device">The device, as <c>devices</c> lists it.</param>
/// <param name="StepUnit">What a step is ("step", "token").</param>
/// <param name="Steps">Steps counted.</param>
/// <param name="MeasuredSeconds">Wall time of the measured windows.</param>
/// <param name="Entries">Every timed row, slowest first.</param>
public sealed record ProfileReport(string Title, string Device, string StepUnit, long Steps, double MeasuredSeconds, IReadOnlyList<ProfileEntry> Entries)
{
    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
    };

    /// <summary>Time of the scoped rows (kernels, uploads, read-backs, synchronizations).</summary>
    public double ScopedSeconds => Entries.Sum(e => e.Seconds);

    /// <summary>The host's own time: measured minus scoped.</summary>
    public double HostSeconds => MeasuredSeconds - ScopedSeconds;

    /// <summary>Kernel families that appear (launched inside a window).</summary>
    public IReadOnlyList<string> Families => Entries.Where(e => e.Kind == ProfileRowKind.Kernel).Select(e => e.Family).Distinct().Order(StringComparer.Ordinal).ToList();

    /// <summary>One row per kernel family, then one per host-side kind (upload, read-back, synchronize, host); they add up to the measured time.</summary>
    public IReadOnlyList<ProfileRow> ByFamily()
    {
        var rows = Group(Entries.Where(e => e.Kind == ProfileRowKind.Kernel), e => e.Family);
        rows.AddRange(Group(Entries.Where(e => e.Kind is not ProfileRowKind.Kernel), e => "host: " + KindName(e.Kind)));
        rows.Add(HostRow());
        return rows;
    }

    /// <summary>One row per kernel family and entry point (<c>Matmul · multiply TN</c>), kernels only, slowest first.</summary>
    public IReadOnlyList<ProfileRow> ByKernel() =>
        Group(Entries.Where(e => e.Kind == ProfileRowKind.Kernel), e => $"{e.Family} · {e.Kernel}");

    /// <summary>One row per layer scope ("" as "(model)"), then the host row; they add up to the measured time.</summary>
    public IReadOnlyList<ProfileRow> ByLayer()
    {
        var rows = Group(Entries, e => e.Layer.Length == 0 ? "(outside layers)" : e.Layer);
        rows.Add(HostRow());
        return rows;
    }

    /// <summary>One row per phase, then the host row; they add up to the measured time.</summary>
    public IReadOnlyList<ProfileRow> ByPhase()
    {
        var rows = Group(Entries, e => e.Phase.ToString().ToLowerInvariant());
        rows.Add(HostRow());
        return rows;
    }

    /// <summary>The report as indented JSON: the summary, the three tables and every entry.</summary>
    public string ToJson() => JsonSerializer.Serialize(
        new
        {
            Title,
            Device,
            StepUnit,
            Steps,
            MeasuredSeconds,
            SecondsPerStep = PerStep(MeasuredSeconds),
            ByFamily = ByFamily(),
            ByLayer = ByLayer(),
            ByPhase = ByPhase(),
            ByKernel = ByKernel(),
            Entries,
        },
        JsonOptions);

    /// <summary>The report as Markdown: a summary line and the tables by family, phase and layer.</summary>
    public string ToMarkdown()
    {
        var text = new StringBuilder();
        void Line(string line = "") => text.Append(line).Append('\n');
        Line(Invariant($"# Profile: {Title}"));
        Line();
        Line(Invariant($"Device: {Device}. {Steps} {StepUnit}s measured in {MeasuredSeconds:F3} s ({1e3 * PerStep(MeasuredSeconds):F2} ms per {StepUnit}, profiled: every scope waits for the device, so read shares rather than absolute times)."));
        Table(text, "By kernel family (host-side rows last)", ByFamily(), withWork: true);
        Table(text, "By kernel entry point (kernels only)", ByKernel(), withWork: true, total: false);
        Table(text, "By phase", ByPhase(), withWork: false);
        Table(text, "By layer", ByLayer(), withWork: false);
        return text.ToString();
    }

    /// <summary>Writes <c>name.md</c> and <c>name.json</c> into <paramref name="folder"/> (created) and returns their paths.</summary>
    public (string Markdown, string Json) Save(string folder, string name)
    {
        Directory.CreateDirectory(folder);
        var markdown = Path.Combine(folder, name + ".md");
        var json = Path.Combine(folder, name + ".json");
        File.WriteAllText(markdown, ToMarkdown());
        File.WriteAllText(json, ToJson());
        return (markdown, json);
    }

    private void Table(StringBuilder text, string heading, IReadOnlyList<ProfileRow> rows, bool withWork, bool total = true)
    {
        text.Append('\n').Append("## ").Append(heading).Append("\n\n");
        text.Append(withWork
            ? "| | calls/step | ms/step | share | fwd / bwd / opt | GFLOP/s | GB/s |\n|---|---:|---:|---:|---|---:|---:|\n"
            : "| | calls/step | ms/step | share | fwd / bwd / opt |\n|---|---:|---:|---:|---|\n");
        foreach (var row in rows)
        {
            var split = Invariant($"{100 * row.ForwardShare:F0} / {100 * row.BackwardShare:F0} / {100 * row.OptimizerShare:F0} %");
            text.Append(Invariant($"| {row.Label} | {PerStep(row.Calls):0.#} | {1e3 * row.SecondsPerStep:F2} | {100 * row.Share:F1} % | {split} |"));
            if (withWork)
                text.Append(Invariant($" {Number(row.GflopsPerSecond)} | {Number(row.GigabytesPerSecond)} |"));
            text.Append('\n');
        }
        if (total)
            text.Append(Invariant($"| **measured** | | **{1e3 * PerStep(MeasuredSeconds):F2}** | **{100 * rows.Sum(r => r.Share):F1} %** | |{(withWork ? " | |" : "")}\n"));
    }

    private List<ProfileRow> Group(IEnumerable<ProfileEntry> entries, Func<ProfileEntry, string> label) => entries
        .GroupBy(label)
        .Select(g => Row(g.Key, g.Sum(e => e.Calls), g.Sum(e => e.Seconds), g.Sum(e => e.Flops), g.Sum(e => e.Bytes),
            g.Where(e => e.Phase == ProfilePhase.Forward).Sum(e => e.Seconds),
            g.Where(e => e.Phase == ProfilePhase.Backward).Sum(e => e.Seconds),
            g.Where(e => e.Phase == ProfilePhase.Optimizer).Sum(e => e.Seconds)))
        .OrderByDescending(r => r.Seconds)
        .ToList();

    private ProfileRow HostRow() => Row("host: bookkeeping (unscoped)", 0, HostSeconds, 0, 0, 0, 0, 0);

    private ProfileRow Row(string label, long calls, double seconds, double flops, double bytes, double forward, double backward, double optimizer) => new(
        label, calls, seconds, PerStep(seconds), MeasuredSeconds > 0 ? seconds / MeasuredSeconds : 0,
        flops > 0 && seconds > 0 ? flops / seconds / 1e9 : null,
        bytes > 0 && seconds > 0 ? bytes / seconds / 1e9 : null,
        seconds > 0 ? forward / seconds : 0, seconds > 0 ? backward / seconds : 0, seconds > 0 ? optimizer / seconds : 0);

    private double PerStep(double value) => Steps > 0 ? value / Steps : value;

    private static string KindName(ProfileRowKind kind) => kind switch
    {
        ProfileRowKind.ReadBack => "read-back",
        ProfileRowKind.Upload => "upload",
        ProfileRowKind.Synchronize => "synchronize",
        _ => kind.ToString().ToLowerInvariant(),
    };

    private static string Number(double? value) => value is { } v ? v.ToString(v >= 100 ? "F0" : "F1", CultureInfo.InvariantCulture) : "";

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
