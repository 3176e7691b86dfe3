using System.CommandLine;
using GpuTransformer.Kernels.Backends;
using Spectre.Console;

namespace GpuTransformer.Cli.Commands;

/// <summary><c>devices</c>: every device ILGPU finds, and which one <c>--backend</c> (default auto) picks.</summary>
public static class DevicesCommand
{
    public static Command Create(CliContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var command = new Command("devices", "List the compute devices on this machine and show which one --backend picks");
        context.SetAction(command, parse => Run(context, parse));
        return command;
    }

    private static int Run(CliContext context, ParseResult parse)
    {
        var options = context.DeviceOptions(parse);
        var backend = context.Backend(parse);
        var found = ComputeDevice.ListDevices(options);
        DeviceDescription? picked = null;
        string? pickProblem = null;
        try
        {
            picked = ComputeDevice.Choose(found, backend, options);
        }
        catch (InvalidOperationException e)
        {
            pickProblem = e.Message.Split('\n')[0].Trim();
        }

        var requested = backend is null ? "auto" : ComputeDevice.BackendName(backend.Value);
        var table = new Table().Border(TableBorder.Rounded).Title($"Devices (--backend {requested})");
        foreach (var column in new[] { "device", "name", "kind", "memory", "group ≤", "warp", "CUs", $"{requested} picks" })
            table.AddColumn(new TableColumn(Markup.Escape(column)).NoWrap());
        table.AddColumn(new TableColumn("features"));
        var c = System.Globalization.CultureInfo.InvariantCulture;
        foreach (var d in found)
        {
            var mark = d == picked ? "◀ yes" : d.NeedsPortableOptIn && backend is Backend.OpenCL && !options.AllowPortableOpenCL ? "needs --opencl-portable" : "";
            table.AddRow(
                $"{d.BackendName}:{d.IndexInBackend}", Markup.Escape(d.Name), d.Kind.ToString(),
                d.Kind == DeviceKind.Simulator ? "host" : FormatBytes(d.MemoryBytes),
                d.MaxGroupSize.ToString(c), d.WarpSize.ToString(c), d.Multiprocessors.ToString(c), Markup.Escape(mark), Markup.Escape(d.Features));
        }
        context.Out.Write(table);
        // Backends without a device say why (a missing driver library, or the driver's error); an
        // installed driver that gives no device is a fault, so it is a warning too.
        foreach (var missing in ComputeDevice.MissingBackends(found))
        {
            context.Out.MarkupLine(Markup.Escape($"{ComputeDevice.BackendName(missing.Backend)}: no device; {missing.Reason}"));
            if (missing.DriverPresent)
                context.Error.WriteLine($"warning: {missing}");
        }
        if (picked is not null)
        {
            context.Out.MarkupLine(Markup.Escape($"--backend {requested} picks {picked.BackendName}:{picked.IndexInBackend} {picked.Name} ({picked.Kind})."));
            if (picked.Kind == DeviceKind.Simulator)
                context.Out.MarkupLine(Markup.Escape("That is ILGPU's CPU simulator: correct but very slow. Install PoCL (apt-get install pocl-opencl-icd) for a fast CPU path."));
            return 0;
        }
        context.Error.WriteLine($"error: {CliContext.WithoutListing(pickProblem!, suggestDevices: false)}");
        return CliApp.Failure;
    }

    internal static string FormatBytes(long bytes) => bytes switch
    {
        >= 1L << 30 => $"{bytes / (double)(1L << 30):F1} GiB",
        >= 1L << 20 => $"{bytes / (double)(1L << 20):F0} MiB",
        _ => $"{bytes:N0} B",
    };
}
