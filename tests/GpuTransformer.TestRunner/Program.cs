using System.Diagnostics;
using System.Reflection;
using System.Text.Json;
using Xunit.Runner.Common;
using Xunit.Sdk;
using Xunit.v3;

namespace GpuTransformer.TestRunner;

/// <summary>
/// <c>gpu-transformer-tests</c>: discovers and runs the tests of GpuTransformer.Tests.dll in this
/// process with xunit v3's in-process front controller, prints failures as they happen and a closing line
/// "N passed, N failed, N skipped". Exit code 0 when nothing failed, 1 otherwise, 2 on usage errors.
/// </summary>
public static class Program
{
    private const string Usage = """
        gpu-transformer-tests [--filter TEXT]... [--exclude TEXT]... [--backend-tests [--also TEXT]...] [--time-limit SECONDS] [--json FILE] [--list]
          --filter TEXT       run tests whose full name (Namespace.Class.Method) contains TEXT ('|' separates alternatives); repeatable
          --exclude TEXT      skip tests whose full name contains TEXT; repeatable
          --backend-tests     only the tests that run on each backend (a `string backend` parameter): on a GPU machine,
                              those that exercise the GPU; the simulator-only and device-free tests are left out
          --also TEXT         with --backend-tests: also the tests whose full name contains TEXT ('|' separates alternatives;
                              facts that need a GPU itself); repeatable
          --time-limit S      stop starting tests after S seconds (the summary says so)
          --json FILE         write the summary (counts, failures, time) as JSON; rewritten every few seconds while
                              tests run ("finished": false), so a killed run leaves what had finished
          --list              list the matching tests and exit
        Backends: GPUTRANSFORMER_TEST_BACKENDS=cuda,opencl,cpu restricts the devices tests run on;
        GPUTRANSFORMER_REQUIRE_BACKENDS makes a missing one a failure.
        """;

    private static readonly JsonSerializerOptions JsonOptions = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public static int Main(string[] args)
    {
        ArgumentNullException.ThrowIfNull(args);
        var filters = new List<string>();
        var excludes = new List<string>();
        double? timeLimit = null;
        string? json = null;
        var list = false;
        var backendTests = false;
        var also = new List<string>();
        try
        {
            for (var i = 0; i < args.Length; i++)
            {
                string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value.");
                switch (args[i])
                {
                    case "--filter":
                        filters.AddRange(Value().Split('|', StringSplitOptions.RemoveEmptyEntries));
                        break;
                    case "--exclude":
                        excludes.AddRange(Value().Split('|', StringSplitOptions.RemoveEmptyEntries));
                        break;
                    case "--time-limit":
                        timeLimit = double.Parse(Value(), System.Globalization.CultureInfo.InvariantCulture);
                        break;
                    case "--json":
                        json = Value();
                        break;
                    case "--list":
                        list = true;
                        break;
                    case "--backend-tests":
                        backendTests = true;
                        break;
                    case "--also":
                        also.AddRange(Value().Split('|', StringSplitOptions.RemoveEmptyEntries));
                        break;
                    case "-h" or "--help":
                        Console.WriteLine(Usage);
                        return 0;
                    default:
                        throw new ArgumentException($"Unknown argument '{args[i]}'.");
                }
            }
        }
        catch (Exception e) when (e is ArgumentException or FormatException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            Console.Error.WriteLine(Usage);
            return 2;
        }

        var assembly = typeof(GpuTransformer.Tests.Infrastructure.Devices).Assembly;
        // The tests find their data files (golden/, Training/Fixtures) next to the assembly.
        Directory.SetCurrentDirectory(AppContext.BaseDirectory);
        var configuration = Configuration(assembly);
        using var cancellation = new CancellationTokenSource();
        // As xunit's own in-process runner: the context first, then the framework.
        Xunit.TestContext.SetForInitialization(new DiagnosticSink(), diagnosticMessages: false, internalDiagnosticMessages: false);
        var framework = RegisteredEngineConfig.GetTestFramework(assembly, configuration.Path);
        try
        {
            var controller = new InProcessFrontController(framework, assembly, configuration.Path);
            var cases = Discover(controller, configuration.Settings, filters, excludes, backendTests ? also : null, cancellation);
            if (list)
            {
                foreach (var name in cases.Select(FullName).Order(StringComparer.Ordinal))
                    Console.WriteLine(name);
                Console.WriteLine($"{cases.Count} test cases");
                return 0;
            }
            Console.WriteLine($"[tests] {cases.Count} test cases from {Path.GetFileName(assembly.Location)} (theories expand into one test per row when run); backends: {Environment.GetEnvironmentVariable("GPUTRANSFORMER_TEST_BACKENDS") ?? "all present"}");

            var sink = new ExecutionSink(timeLimit, json, cancellation);
            controller.Run(sink, TestFrameworkOptions.ForExecution(configuration.Settings), cases, cancellation).AsTask().GetAwaiter().GetResult();
            var summary = sink.Summary(finished: true);
            if (json is not null)
                WriteJson(json, summary);
            if (summary.StoppedAtTimeLimit)
                Console.WriteLine($"[tests] stopped starting tests after the time limit of {timeLimit} s; {cases.Count - summary.Total} test cases did not run");
            Console.WriteLine($"[tests] {summary.Seconds:F1} s");
            // The closing line CI tools read.
            Console.WriteLine($"{summary.Passed} passed, {summary.Failed} failed, {summary.Skipped} skipped");
            return summary.Failed == 0 && !summary.StoppedAtTimeLimit && summary.Total > 0 ? 0 : 1;
        }
        finally
        {
            (framework as IAsyncDisposable)?.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
    }

    /// <summary>
    /// The discovered tests that pass the filters; with <paramref name="backendTests"/>, only those
    /// that run per backend or match one of its names.
    /// </summary>
    private static List<ITestCase> Discover(
        InProcessFrontController controller, TestAssemblyConfiguration settings, List<string> filters, List<string> excludes, List<string>? backendTests,
        CancellationTokenSource cancellation)
    {
        var cases = new List<ITestCase>();
        bool Wanted(ITestCase c) =>
            (filters.Count == 0 || filters.Any(f => FullName(c).Contains(f, StringComparison.Ordinal))) &&
            !excludes.Any(e => FullName(c).Contains(e, StringComparison.Ordinal)) &&
            (backendTests is null || RunsPerBackend(c) || backendTests.Any(a => FullName(c).Contains(a, StringComparison.Ordinal)));
        controller.Find(
            new DiagnosticSink(),
            TestFrameworkOptions.ForDiscovery(settings),
            Wanted,
            cancellation,
            discoveryCallback: (testCase, passedFilter) =>
            {
                if (passedFilter)
                    cases.Add(testCase);
                return new ValueTask<bool>(true);
            }).AsTask().GetAwaiter().GetResult();
        return cases;
    }

    /// <summary>Whether the test runs once per backend: a theory with a <c>string backend</c> parameter.</summary>
    private static bool RunsPerBackend(ITestCase testCase) =>
        testCase is IXunitTestCase xunit && xunit.TestMethod.Method.GetParameters().Any(p => p.Name == "backend" && p.ParameterType == typeof(string));

    /// <summary>Writes <paramref name="summary"/> to <paramref name="path"/> through a temporary file, so that a reader never sees half of it.</summary>
    private static void WriteJson(string path, Summary summary)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        var temporary = path + ".tmp";
        File.WriteAllText(temporary, JsonSerializer.Serialize(summary, JsonOptions));
        File.Move(temporary, path, overwrite: true);
    }

    private static string FullName(ITestCase testCase) => $"{testCase.TestClassName}.{testCase.TestMethodName}";

    /// <summary>
    /// The test assembly's xunit.runner.json (parallelisation and the like), as xunit's own
    /// runners read it; theories are not pre-enumerated, so --list shows one line per method.
    /// </summary>
    private static (TestAssemblyConfiguration Settings, string? Path) Configuration(Assembly assembly)
    {
        var settings = new TestAssemblyConfiguration();
        var path = Path.Combine(Path.GetDirectoryName(assembly.Location)!, "xunit.runner.json");
        var warnings = new List<string>();
        if (!File.Exists(path) || !ConfigReader_Json.Load(settings, assembly.Location, path, warnings))
            path = null;
        foreach (var warning in warnings)
            Console.Error.WriteLine($"[xunit] {warning}");
        settings.PreEnumerateTheories = false;
        return (settings, path);
    }

    private sealed class DiagnosticSink : IMessageSink
    {
        public bool OnMessage(IMessageSinkMessage message)
        {
            switch (message)
            {
                case IDiagnosticMessage diagnostic:
                    Console.Error.WriteLine($"[xunit] {diagnostic.Message}");
                    break;
                case IErrorMessage error:
                    Console.Error.WriteLine($"[tests] discovery error: {string.Join(" ", error.Messages)}");
                    break;
            }
            return true;
        }
    }

    /// <summary>What the JSON summary holds.</summary>
    /// <summary>What the JSON summary holds; <paramref name="Finished"/> is false in the copies written while tests still run.</summary>
    public sealed record Summary(int Passed, int Failed, int Skipped, int Total, double Seconds, bool StoppedAtTimeLimit, IReadOnlyList<Failure> Failures, IReadOnlyList<Slow> Slowest, bool Finished);

    /// <summary>One failed test.</summary>
    public sealed record Failure(string Test, string Message);

    /// <summary>One of the slowest tests.</summary>
    public sealed record Slow(string Test, double Seconds);

    private sealed class ExecutionSink(double? timeLimit, string? json, CancellationTokenSource cancellation) : IMessageSink
    {
        /// <summary>Seconds between the copies of the JSON summary written while tests run.</summary>
        private const double JsonEverySeconds = 5;

        private const string OutsideATest = "(error outside a test)";
        private readonly Stopwatch clock = Stopwatch.StartNew();
        private readonly List<Failure> failures = [];
        private readonly List<Slow> times = [];
        private readonly Dictionary<string, string> names = [];
        private readonly Lock gate = new();
        private int passed;
        private int skipped;
        private bool stopped;
        private double jsonWrittenAt;

        public bool OnMessage(IMessageSinkMessage message)
        {
            lock (gate)
            {
                switch (message)
                {
                    case ITestStarting starting:
                        names[starting.TestUniqueID] = starting.TestDisplayName;
                        break;
                    case ITestPassed pass:
                        passed++;
                        times.Add(new Slow(Name(pass), (double)pass.ExecutionTime));
                        break;
                    case ITestFailed fail:
                        var text = string.Join(" | ", fail.Messages.Select(m => m?.Replace('\n', ' ')));
                        failures.Add(new Failure(Name(fail), text));
                        times.Add(new Slow(Name(fail), (double)fail.ExecutionTime));
                        Console.WriteLine($"[tests] FAIL {Name(fail)} ({fail.ExecutionTime:F1} s): {text}");
                        Console.WriteLine(string.Join(Environment.NewLine, fail.StackTraces.Where(s => s is not null).Select(s => "    " + s!.Replace("\n", "\n    ", StringComparison.Ordinal))));
                        break;
                    case ITestSkipped skip:
                        skipped++;
                        Console.WriteLine($"[tests] skip {Name(skip)}: {skip.Reason}");
                        break;
                    case ITestFinished:
                        var done = passed + failures.Count + skipped;
                        if (done % 50 == 0)
                            Console.WriteLine($"[tests] {done} done ({passed} passed, {failures.Count} failed, {skipped} skipped) at {clock.Elapsed.TotalSeconds:F0} s");
                        if (json is not null && clock.Elapsed.TotalSeconds - jsonWrittenAt >= JsonEverySeconds)
                        {
                            jsonWrittenAt = clock.Elapsed.TotalSeconds;
                            WriteJson(json, Summary(finished: false));
                        }
                        break;
                    case IErrorMetadata error:
                        // Errors outside a test body: fixture and cleanup failures, catastrophic errors.
                        failures.Add(new Failure(OutsideATest, string.Join(" ", error.Messages)));
                        Console.WriteLine($"[tests] ERROR ({message.GetType().Name}) {string.Join(" ", error.Messages)}");
                        break;
                }
                if (timeLimit is { } limit && clock.Elapsed.TotalSeconds > limit && !stopped)
                {
                    stopped = true;
                    Console.WriteLine($"[tests] time limit of {limit} s reached: cancelling");
                    cancellation.Cancel();
                }
                return !stopped;
            }
        }

        private string Name(ITestMessage message) => names.GetValueOrDefault(message.TestUniqueID, message.TestUniqueID);

        public Summary Summary(bool finished)
        {
            lock (gate)
            {
                var total = passed + failures.Count(f => f.Test != OutsideATest) + skipped;
                return new Summary(
                    passed, failures.Count, skipped, total, clock.Elapsed.TotalSeconds, stopped, failures,
                    times.OrderByDescending(t => t.Seconds).Take(10).ToList(), finished);
            }
        }
    }
}
