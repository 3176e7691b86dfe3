using System.CommandLine;
using System.Globalization;
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Kernels.Workloads;
using Spectre.Console;

namespace GpuTransformer.Cli.Commands;

/// <summary>
/// <c>demo</c>: every kernel family once on the chosen backend, on a small random problem
/// (<see cref="WorkloadSuites.Demo"/>), each checked against its C# reference (max error) and
/// timed; prints one table. Exit code 1 when a check fails.
/// </summary>
public static class DemoCommand
{
    public static Command Create(CliContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var only = new Option<string[]>("--only")
        {
            Description = "Run only these families (e.g. --only matmul attention); default: all",
            AllowMultipleArgumentsPerToken = true,
            HelpName = "family",
        };
        var command = new Command(
            "demo",
            "Run every kernel family once on a small random problem, check each against its reference and show the speed");
        command.Options.Add(only);
        context.SetAction(command, parse => Run(context, parse, parse.GetValue(only) ?? []));
        return command;
    }

    private static int Run(CliContext context, ParseResult parse, string[] only)
    {
        using var device = ComputeDevice.Create(context.Backend(parse), context.DeviceOptions(parse));
        var simulator = device.Description.Kind == DeviceKind.Simulator;
        var specs = WorkloadSuites.Demo(simulator)
            .Where(s => only.Length == 0 || only.Any(f => s.Family.Equals(f, StringComparison.OrdinalIgnoreCase)))
            .ToList();
        if (specs.Count == 0)
        {
            var families = string.Join(", ", WorkloadSuites.Demo(simulator).Select(s => s.Family).Distinct());
            throw new ArgumentException($"--only matches no family; families: {families}.");
        }

        context.Out.MarkupLine(Markup.Escape($"Device: {device}"));
        if (simulator)
            context.Out.MarkupLine(Markup.Escape("This is ILGPU's CPU simulator (every GPU thread an OS thread): tiny shapes, correctness only; its speeds mean nothing."));

        var table = new Table().Border(TableBorder.Rounded)
            .Title(Markup.Escape($"Kernel demo on {(simulator ? "the CPU simulator" : device.Description.BackendName)} ({device.Description.Name})"));
        foreach (var column in new[] { "family", "operation", "shape", "max |Δ|", "|Δ| / tol", "check", "median", "speed" })
            table.AddColumn(new TableColumn(column).NoWrap());

        var failures = new List<string>();
        foreach (var spec in specs)
        {
            var row = Measure(device, spec, simulator);
            if (!row.Check.Passed)
                failures.Add($"{spec}: worst {row.Check.Worst}; tolerances {row.Check.Tolerance}");
            table.AddRow(
                Markup.Escape(spec.Family), Markup.Escape(spec.Operation), Markup.Escape(spec.Shape),
                Format(row.Check.MaxAbsError, "0.0e+0"), Format(row.Check.WorstRatio, "0.000"),
                row.Check.Passed ? "[green]ok[/]" : "[red]FAIL[/]", row.Time, Markup.Escape(row.Speed));
        }
        context.Out.Write(table);
        context.Out.MarkupLine(Markup.Escape(
            $"{specs.Count - failures.Count} of {specs.Count} checks passed against the C# references (computed in double): " +
            "every element within atol + rtol·|reference| (|Δ| / tol ≤ 1)."));
        foreach (var failure in failures)
            context.Out.MarkupLine("[red]FAIL[/] " + Markup.Escape(failure));
        var failed = failures.Count;
        if (failed > 0)
            context.Error.WriteLine($"error: {failed} of {specs.Count} kernel checks failed on {device.Description.BackendName}.");
        return failed == 0 ? 0 : CliApp.Failure;
    }

    private readonly record struct DemoRow(WorkloadCheck Check, string Time, string Speed);

    private static string Format(double value, string format) => value.ToString(format, CultureInfo.InvariantCulture);

    private static DemoRow Measure(ComputeDevice device, WorkloadSpec spec, bool simulator)
    {
        using var workload = spec.Create(device);
        // The check is also the first run, so compilation stays out of the timing.
        var check = workload.Check();
        // On the simulator one timed run: its speed means nothing, and each run costs seconds.
        var timing = WorkloadTimer.Measure(workload, simulator ? new TimingPlan(0, 1, 1, 0) : new TimingPlan(1, 5, 20, 0.2));
        var cost = spec.Cost;
        var c = CultureInfo.InvariantCulture;
        return new DemoRow(
            check,
            FormatSeconds(timing.MedianSeconds),
            simulator ? "– (simulator)" : $"{cost.Rate(timing.MedianSeconds).ToString(cost.Rate(timing.MedianSeconds) >= 100 ? "F0" : "F2", c)} {cost.UnitName}");
    }

    internal static string FormatSeconds(double seconds) => seconds switch
    {
        >= 1 => $"{seconds.ToString("F2", CultureInfo.InvariantCulture)} s",
        >= 1e-3 => $"{(seconds * 1e3).ToString("F2", CultureInfo.InvariantCulture)} ms",
        _ => $"{(seconds * 1e6).ToString("F1", CultureInfo.InvariantCulture)} µs",
    };
}
