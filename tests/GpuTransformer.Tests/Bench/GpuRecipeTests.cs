using System.Runtime.CompilerServices;
using System.Text.RegularExpressions;

namespace GpuTransformer.Tests.Bench;

/// <summary>
/// The GPU run of bench/gpu, checked without a GPU: its Python tools' own tests (ptxas parsing,
/// a report from what a killed run leaves) and the recipe's time plan. The files are copied next
/// to the test assembly under bench/gpu.
/// </summary>
public sealed partial class GpuRecipeTests(ITestOutputHelper output)
{
    private static string Folder => Path.Combine(AppContext.BaseDirectory, "bench", "gpu");

    [PythonFact]
    public void Python_tools_pass_their_tests()
    {
        var (code, text) = Run(PythonFactAttribute.Python, "-m", "unittest", "discover", "-s", Folder, "-p", "test_*.py", "-v");
        output.WriteLine(text);
        Assert.True(code == 0, text);
        Assert.Matches(@"Ran [1-9]\d* tests", text);
    }

    [Fact]
    public void Recipe_shares_leave_the_tests_a_minute_inside_the_budget()
    {
        var script = File.ReadAllText(Path.Combine(Folder, "run-on-gpu.sh"));
        var budget = int.Parse(Budget().Match(script).Groups[1].Value, CultureInfo.InvariantCulture);
        var reserve = int.Parse(Reserve().Match(script).Groups[1].Value, CultureInfo.InvariantCulture);
        var shares = Share().Matches(script).ToDictionary(m => m.Groups[1].Value, m => int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture));
        var order = Order().Match(script).Groups[1].Value.Split(' ');
        Assert.Equal(["ptx", "demo", "torch", "matmul", "rowwise", "attention", "train", "generate", "tests"], order);
        Assert.Equal(order[..^1].Order(), shares.Keys.Order());
        // The device tool's timeout_s is 480: the command keeps to 420 s, unpacking (~10 s) included.
        Assert.Equal(420, budget);
        var tests = budget - 10 - shares.Values.Sum() - reserve;
        Assert.True(tests >= 60, $"the tests would get {tests} s when every section uses its share");
    }

    private static (int Code, string Text) Run(string program, params string[] args)
    {
        var start = new ProcessStartInfo(program, args) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        Assert.True(process.WaitForExit(120_000), $"{program} did not finish in 2 minutes");
        return (process.ExitCode, stdout.Result + stderr.Result);
    }

    [GeneratedRegex(@"^budget=(\d+)", RegexOptions.Multiline)]
    private static partial Regex Budget();

    [GeneratedRegex(@"^report_reserve=(\d+)", RegexOptions.Multiline)]
    private static partial Regex Reserve();

    [GeneratedRegex(@"\[(\w+)\]=(\d+)")]
    private static partial Regex Share();

    [GeneratedRegex("^sections=\"([a-z ]+)\"", RegexOptions.Multiline)]
    private static partial Regex Order();
}

/// <summary>A fact that needs a python3 (standard library only), skipped with the reason where there is none.</summary>
public sealed class PythonFactAttribute : FactAttribute
{
    /// <summary>The interpreter: <c>$GPUTRANSFORMER_PYTHON</c>, else /usr/bin/python3.</summary>
    public static string Python => Golden.TorchFactAttribute.Python;

    public PythonFactAttribute([CallerFilePath] string? sourceFilePath = null, [CallerLineNumber] int sourceLineNumber = -1)
        : base(sourceFilePath, sourceLineNumber)
    {
        if (!File.Exists(Python))
            Skip = $"{Python} does not exist (the bench/gpu tools need a python3).";
    }
}
