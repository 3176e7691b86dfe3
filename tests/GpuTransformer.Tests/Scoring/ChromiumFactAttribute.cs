using System.Runtime.CompilerServices;

namespace GpuTransformer.Tests.Scoring;

/// <summary>
/// A fact that needs a headless Chromium: <c>$GPUTRANSFORMER_CHROMIUM</c>, else <c>chromium</c>,
/// <c>chromium-browser</c> or <c>google-chrome</c> on the PATH. Where none is found and apt-get can
/// run as root (Debian/Ubuntu, root or passwordless sudo), the setup installs Debian's
/// <c>chromium</c> once; otherwise the test is skipped with the reason.
/// </summary>
public sealed class ChromiumFactAttribute : FactAttribute
{
    public const string Variable = "GPUTRANSFORMER_CHROMIUM";

    private static readonly Lazy<(string? Path, string? Missing)> Found = new(Find);

    public ChromiumFactAttribute([CallerFilePath] string? sourceFilePath = null, [CallerLineNumber] int sourceLineNumber = -1)
        : base(sourceFilePath, sourceLineNumber)
    {
        if (Found.Value.Missing is { } reason)
            Skip = reason;
    }

    /// <summary>The browser to run (only when the fact is not skipped).</summary>
    public static string Path => Found.Value.Path ?? throw new InvalidOperationException(Found.Value.Missing);

    private static (string? Path, string? Missing) Find()
    {
        if (Environment.GetEnvironmentVariable(Variable) is { Length: > 0 } given)
            return File.Exists(given) ? (given, null) : (null, $"{Variable}={given} does not exist.");
        if (OnPath() is { } path)
            return (path, null);
        if (Install() is { } failure)
            return (null, failure);
        return OnPath() is { } installed ? (installed, null) : (null, "apt-get installed chromium, but no chromium is on the PATH.");
    }

    private static string? OnPath()
    {
        foreach (var folder in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(System.IO.Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            foreach (var name in new[] { "chromium", "chromium-browser", "google-chrome" })
            {
                var candidate = System.IO.Path.Combine(folder, name);
                if (File.Exists(candidate))
                    return candidate;
            }
        }
        return null;
    }

    /// <summary>Installs Debian's chromium with apt-get; null on success, else why not.</summary>
    private static string? Install()
    {
        if (!File.Exists("/usr/bin/apt-get"))
            return "No Chromium on the PATH and no apt-get to install it (set GPUTRANSFORMER_CHROMIUM to a Chromium or Chrome binary).";
        string[] prefix;
        if (Environment.UserName == "root")
            prefix = [];
        else if (File.Exists("/usr/bin/sudo") && Run("/usr/bin/sudo", ["-n", "true"], 30) == 0)
            prefix = ["/usr/bin/sudo", "-n"];
        else
            return "No Chromium on the PATH, and installing it with apt-get needs root or passwordless sudo (apt-get install chromium).";
        string[] install = [.. prefix, "/usr/bin/env", "DEBIAN_FRONTEND=noninteractive", "/usr/bin/apt-get", "install", "-y", "-qq", "chromium"];
        if (Run(install[0], install[1..], 600) == 0)
            return null;
        string[] update = [.. prefix, "/usr/bin/apt-get", "update", "-qq"];
        return Run(update[0], update[1..], 300) == 0 && Run(install[0], install[1..], 600) == 0
            ? null
            : "No Chromium on the PATH and apt-get install chromium failed.";
    }

    private static int Run(string file, string[] arguments, int seconds)
    {
        try
        {
            var start = new ProcessStartInfo(file, arguments) { RedirectStandardOutput = true, RedirectStandardError = true };
            using var process = Process.Start(start)!;
            process.StandardOutput.ReadToEndAsync();
            process.StandardError.ReadToEndAsync();
            if (process.WaitForExit(seconds * 1000))
                return process.ExitCode;
            process.Kill(entireProcessTree: true);
            return -1;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return -1;
        }
    }
}
