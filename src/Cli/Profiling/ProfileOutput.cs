using System.Globalization;
using GpuTransformer.Kernels.Profiling;
using GpuTransformer.Reporting;

namespace GpuTransformer.Cli.Profiling;

/// <summary>What <c>--profile</c> leaves behind: <c>name.md</c>, <c>name.json</c> and <c>name.png</c>, and a line naming the slowest rows.</summary>
internal static class ProfileOutput
{
    /// <summary>Writes the report's files into <paramref name="folder"/> and prints where, with the three largest rows.</summary>
    public static void Write(TextWriter output, ProfileReport report, string folder, string name)
    {
        if (report.Steps == 0)
        {
            output.WriteLine("Profile: nothing was measured (the run ended within its warm-up).");
            return;
        }
        var (markdown, _) = report.Save(folder, name);
        ProfileChart.Save(Path.Combine(folder, name + ".png"), report);
        var top = string.Join(", ", report.ByFamily().OrderByDescending(r => r.Seconds).Take(3)
            .Select(r => string.Create(CultureInfo.InvariantCulture, $"{r.Label} {100 * r.Share:F0} %")));
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"Profile of {report.Steps} {report.StepUnit}s ({1e3 * report.MeasuredSeconds / report.Steps:F1} ms each, profiled): {top}. {markdown} (.json, .png)"));
    }
}
