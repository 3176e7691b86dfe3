using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Runtime.InteropServices;

namespace GpuTransformer.Bench.Compare;

/// <summary>Where and when a measurement was taken, for the header of a report.</summary>
/// <param name="Cpu">CPU model (/proc/cpuinfo).</param>
/// <param name="Cores">Logical processors.</param>
/// <param name="LoadAverage">The 1-, 5- and 15-minute load averages (as <c>uptime</c> prints them).</param>
/// <param name="Os">Operating system.</param>
/// <param name="Runtime">.NET runtime.</param>
/// <param name="Commit">Git commit of the build (the working tree's HEAD when run from a clone, else the one the build embedded).</param>
/// <param name="DateUtc">When.</param>
public sealed record MachineInfo(string Cpu, int Cores, string LoadAverage, string Os, string Runtime, string Commit, DateTime DateUtc)
{
    /// <summary>Reads the current machine.</summary>
    public static MachineInfo Current() => new(
        CpuModel(),
        Environment.ProcessorCount,
        LoadAverageNow(),
        RuntimeInformation.OSDescription,
        RuntimeInformation.FrameworkDescription,
        CommitOfBuild(),
        DateTime.UtcNow);

    /// <summary>The load averages now (/proc/loadavg), or "unknown".</summary>
    public static string LoadAverageNow()
    {
        try
        {
            var parts = File.ReadAllText("/proc/loadavg").Split(' ');
            return $"{parts[0]}, {parts[1]}, {parts[2]}";
        }
        catch (IOException)
        {
            return "unknown";
        }
        catch (UnauthorizedAccessException)
        {
            return "unknown";
        }
    }

    private static string CpuModel()
    {
        try
        {
            var line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
            if (line is not null)
                return line[(line.IndexOf(':', StringComparison.Ordinal) + 1)..].Trim();
        }
        catch (IOException)
        {
        }
        return RuntimeInformation.ProcessArchitecture.ToString();
    }

    /// <summary>
    /// The commit the binary was built from (embedded by the SDK), annotated with what the
    /// current directory's git says: uncommitted changes, or a different HEAD.
    /// </summary>
    private static string CommitOfBuild()
    {
        var version = typeof(MachineInfo).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "";
        var plus = version.IndexOf('+', StringComparison.Ordinal);
        var built = plus >= 0 ? version[(plus + 1)..] : null;
        var head = Git("rev-parse HEAD");
        if (built is null)
            return head is null ? "unknown" : $"{head[..12]} (working tree; the build embedded none)";
        if (head is null)
            return built[..Math.Min(12, built.Length)];
        if (!head.Equals(built, StringComparison.OrdinalIgnoreCase))
            return $"{built[..Math.Min(12, built.Length)]} (built; the working tree is at {head[..12]})";
        return string.IsNullOrEmpty(Git("status --porcelain --untracked-files=no"))
            ? built[..12]
            : $"{built[..12]} + uncommitted changes";
    }

    private static string? Git(string arguments)
    {
        try
        {
            using var process = Process.Start(new ProcessStartInfo("git", arguments)
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            });
            if (process is null)
                return null;
            var output = process.StandardOutput.ReadToEnd().Trim();
            process.WaitForExit();
            return process.ExitCode == 0 ? output : null;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return null;
        }
    }

    /// <summary>The header lines of a markdown report.</summary>
    public IEnumerable<string> MarkdownLines()
    {
        yield return $"- Date: {DateUtc.ToString("yyyy-MM-dd HH:mm", CultureInfo.InvariantCulture)} UTC";
        yield return $"- Machine: {Cpu}, {Cores} logical cores; load average (1/5/15 min) at start: {LoadAverage}";
        yield return $"- OS: {Os}; {Runtime}";
        yield return $"- Commit: {Commit}";
    }
}
