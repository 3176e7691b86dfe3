using System.CommandLine;
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Training.Data;
using Spectre.Console;

namespace GpuTransformer.Cli;

/// <summary>What every command gets: where to write, the global options, and the error handling.</summary>
/// <param name="Out">Console for tables and progress (stdout).</param>
/// <param name="Output">Plain stdout.</param>
/// <param name="Error">stderr: errors and warnings.</param>
/// <param name="Globals">The global options.</param>
/// <param name="Interactive">Live displays: true/false, or null to detect a terminal.</param>
public sealed record CliContext(IAnsiConsole Out, TextWriter Output, TextWriter Error, GlobalOptions Globals, bool? Interactive)
{
    /// <summary>
    /// Sets <paramref name="command"/>'s action to <paramref name="body"/> with the common error
    /// handling: an exception becomes one line <c>error: message</c> on stderr and exit code 1
    /// (the full exception with <c>--verbose</c>).
    /// </summary>
    public void SetAction(Command command, Func<ParseResult, int> body)
    {
        ArgumentNullException.ThrowIfNull(command);
        ArgumentNullException.ThrowIfNull(body);
        command.SetAction(parse =>
        {
            try
            {
                return body(parse);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                ReportError(e, parse.GetValue(Globals.Verbose));
                return CliApp.Failure;
            }
        });
    }

    /// <summary>Writes <paramref name="e"/> as one line, or in full when <paramref name="verbose"/>.</summary>
    public void ReportError(Exception e, bool verbose)
    {
        ArgumentNullException.ThrowIfNull(e);
        if (verbose)
        {
            Error.WriteLine($"error: {e}");
            return;
        }
        var lines = e.Message.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var first = lines.Length > 0 ? WithoutListing(WithoutParameterName(lines[0], e)) : e.GetType().Name;
        Error.WriteLine(lines.Length > 1 ? $"error: {first} (details: --verbose)" : $"error: {first}");
    }

    /// <summary>An ArgumentException's message ends with " (Parameter 'name')", which names a C# parameter, not anything the user typed: drop it.</summary>
    internal static string WithoutParameterName(string line, Exception e) =>
        e is ArgumentException { ParamName: { } name } && line.EndsWith($" (Parameter '{name}')", StringComparison.Ordinal)
            ? line[..^$" (Parameter '{name}')".Length]
            : line;

    /// <summary>Device-selection messages end their first line with "Found:" before a device listing; one-line output points to <c>devices</c> instead.</summary>
    internal static string WithoutListing(string line, bool suggestDevices = true) =>
        line.EndsWith(" Found:", StringComparison.Ordinal)
            ? line[..^" Found:".Length] + (suggestDevices ? " Run 'gpu-transformer devices' to list the devices." : "")
            : line;

    /// <summary>Device options from the global options.</summary>
    public DeviceOptions DeviceOptions(ParseResult parse)
    {
        ArgumentNullException.ThrowIfNull(parse);
        return new DeviceOptions { AllowPortableOpenCL = parse.GetValue(Globals.OpenCLPortable) || new DeviceOptions().AllowPortableOpenCL };
    }

    /// <summary>The backend the user asked for (null: auto).</summary>
    public Backend? Backend(ParseResult parse)
    {
        ArgumentNullException.ThrowIfNull(parse);
        return ComputeDevice.ParseBackend(parse.GetValue(Globals.Backend) ?? "auto");
    }

    /// <summary>Corpus options from the global options; log lines go to stderr.</summary>
    public CorpusOptions CorpusOptions(ParseResult parse)
    {
        ArgumentNullException.ThrowIfNull(parse);
        return new CorpusOptions
        {
            CacheDirectory = parse.GetValue(Globals.CacheDir),
            Log = line => Error.WriteLine(line),
        };
    }
}
