using GpuTransformer.Cli;

namespace GpuTransformer.Tests.Infrastructure;

/// <summary>
/// The command line in-process for command tests: on PoCL when present (fast), else the CPU
/// simulator, with stdout and stderr captured; and the house rule for errors (one line
/// <c>error: …</c>, no stack trace).
/// </summary>
public static class CliRuns
{
    /// <summary>The backend command tests run on.</summary>
    public static string Backend => Devices.Available.Contains("opencl") ? "opencl" : "cpu";

    /// <summary>Runs <paramref name="args"/> on <see cref="Backend"/>: exit code, stdout, stderr.</summary>
    public static (int Code, string Out, string Error) Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = CliApp.Run([.. args, "--backend", Backend, "--opencl-portable"], stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    /// <summary>Asserts stderr starts with one line <c>error: …</c> containing <paramref name="expected"/>, and holds no stack trace.</summary>
    public static void AssertOneLineError(string error, string expected)
    {
        var lines = error.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length >= 1, "an error line");
        Assert.StartsWith("error: ", lines[0]);
        Assert.Contains(expected, lines[0]);
        Assert.DoesNotContain("   at ", error);
    }
}
