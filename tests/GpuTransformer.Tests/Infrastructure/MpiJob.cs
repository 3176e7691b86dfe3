using System.Runtime.CompilerServices;
using System.Collections.Concurrent;
using System.Text.RegularExpressions;

namespace GpuTransformer.Tests.Infrastructure;

/// <summary>
/// One <c>mpirun</c> job of a .NET program from this test folder (the MPI probe, later the CLI):
/// starts it on N ranks, collects stdout and stderr line by line as they come (.NET's console
/// writes terminal escapes under mpirun's pseudo-terminal: removed), finds a rank's pid, and waits
/// with a bound — a job that outlives it is killed with all its ranks and the test fails with the
/// output so far.
/// </summary>
public sealed partial class MpiJob : IDisposable
{
    /// <summary>Set to 1 (CI, and <c>gt test</c> where mpirun is installed) to make a missing mpirun a failure, not a skip.</summary>
    public const string RequireVariable = "GPUTRANSFORMER_REQUIRE_MPI";

    private static readonly Lazy<string?> MpirunPath = new(() => FindOnPath("mpirun"));
    private readonly Process process;
    private readonly ConcurrentQueue<string> lines = new();
    private readonly Stopwatch clock = Stopwatch.StartNew();

    private MpiJob(Process process)
    {
        this.process = process;
        process.OutputDataReceived += (_, e) => Collect(e.Data);
        process.ErrorDataReceived += (_, e) => Collect(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    /// <summary>Why MPI jobs cannot run here, or null when mpirun is on the PATH.</summary>
    public static string? MissingReason =>
        MpirunPath.Value is null ? "mpirun is not on the PATH (apt-get install openmpi-bin; CI sets " + RequireVariable + "=1 so it cannot be missing there)." : null;

    /// <summary>Why an MPI test is skipped: <see cref="MissingReason"/>, unless <see cref="RequireVariable"/> makes it a failure.</summary>
    public static string? SkipReason => Environment.GetEnvironmentVariable(RequireVariable) is "1" ? null : MissingReason;

    /// <summary>Every line so far, stdout and stderr interleaved as they arrived.</summary>
    public string Output => string.Join('\n', lines);

    /// <summary>Time since the job started.</summary>
    public TimeSpan Elapsed => clock.Elapsed;

    /// <summary>
    /// <c>mpirun -np <paramref name="ranks"/> PROGRAM ARGS</c>, where PROGRAM is <paramref name="program"/>
    /// (an assembly name in this folder, e.g. gpu-transformer-mpi-probe) started with the dotnet host
    /// that runs the tests, or its apphost.
    /// </summary>
    public static MpiJob Start(int ranks, string program, params string[] arguments) =>
        StartWith([], ranks, program, arguments);

    /// <summary>As <see cref="Start"/> with <paramref name="mpirunOptions"/> before the program (e.g. <c>-x NAME=value</c>).</summary>
    public static MpiJob StartWith(IEnumerable<string> mpirunOptions, int ranks, string program, params string[] arguments) =>
        Launch(Mpirun, [.. CommonOptions, .. mpirunOptions, "-np", $"{ranks}", .. Program(program), .. arguments]);

    /// <summary>One rank per entry of <paramref name="argumentsPerRank"/>, each with its own arguments (mpirun's <c>-np 1 P A : -np 1 P B</c>), after <paramref name="mpirunOptions"/>.</summary>
    public static MpiJob StartEach(string program, IEnumerable<string> mpirunOptions, params string[][] argumentsPerRank)
    {
        var command = new List<string>([.. CommonOptions, .. mpirunOptions]);
        for (var rank = 0; rank < argumentsPerRank.Length; rank++)
        {
            if (rank > 0)
                command.Add(":");
            command.AddRange(["-np", "1", .. Program(program), .. argumentsPerRank[rank]]);
        }
        return Launch(Mpirun, command);
    }

    /// <summary>
    /// The pid of rank <paramref name="rank"/>: the child of mpirun whose environment holds
    /// OMPI_COMM_WORLD_RANK=rank (for programs that do not print their pid), or null.
    /// </summary>
    public int? RankProcessId(int rank)
    {
        foreach (var folder in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(folder), out var pid))
                continue;
            try
            {
                var stat = File.ReadAllText(Path.Combine(folder, "stat"));
                var parent = int.Parse(stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[1]);
                if (parent != process.Id)
                    continue;
                var environment = File.ReadAllText(Path.Combine(folder, "environ")).Split('\0');
                if (environment.Contains($"OMPI_COMM_WORLD_RANK={rank}"))
                    return pid;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
            {
                // the process ended meanwhile, or is not ours
            }
        }
        return null;
    }

    private static string Mpirun => MpirunPath.Value ?? throw new InvalidOperationException(MissingReason);

    // --oversubscribe: more ranks than cores (2 here); --allow-run-as-root: CI containers run as root;
    // no single-copy (CMA) transfers: containers often forbid the cross-process reads it uses for large messages.
    private static string[] CommonOptions => ["--oversubscribe", "--allow-run-as-root", "--mca", "btl_vader_single_copy_mechanism", "none"];

    /// <summary>PROGRAM ARGS without mpirun: one process, as a user starts it.</summary>
    public static MpiJob StartAlone(string program, params string[] arguments)
    {
        var command = Program(program);
        return Launch(command[0], [.. command.Skip(1), .. arguments]);
    }

    private static MpiJob Launch(string file, IEnumerable<string> arguments)
    {
        var start = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true, // mpirun forwards stdin to rank 0: give it none of the test host's
            UseShellExecute = false,
        };
        foreach (var arg in arguments)
            start.ArgumentList.Add(arg);
        return new MpiJob(Process.Start(start) ?? throw new InvalidOperationException($"{file} did not start"));
    }

    /// <summary>The command that starts <paramref name="program"/>: the dotnet host running the tests and the dll, else the apphost.</summary>
    private static string[] Program(string program)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, program + ".dll");
        if (!File.Exists(dll))
            throw new FileNotFoundException($"{dll} is missing: the test project references the program's project so that the build copies it here.");
        return Environment.ProcessPath is { } host && Path.GetFileNameWithoutExtension(host) == "dotnet"
            ? [host, dll]
            : [Path.Combine(AppContext.BaseDirectory, program)];
    }

    /// <summary>Waits until a line matches <paramref name="predicate"/>; false when the job ended or <paramref name="timeout"/> passed first.</summary>
    public bool WaitForLine(Func<string, bool> predicate, TimeSpan timeout)
    {
        var deadline = clock.Elapsed + timeout;
        while (clock.Elapsed < deadline)
        {
            if (lines.Any(predicate))
                return true;
            if (process.HasExited)
                return lines.Any(predicate);
            Thread.Sleep(50);
        }
        return false;
    }

    /// <summary>The pid rank <paramref name="rank"/> printed ("rank r/N: pid P"), or null.</summary>
    public int? Pid(int rank)
    {
        foreach (var line in lines)
        {
            var match = PidLine().Match(line);
            if (match.Success && int.Parse(match.Groups[1].Value) == rank)
                return int.Parse(match.Groups[2].Value);
        }
        return null;
    }

    /// <summary>Waits for the job to exit and returns its exit code; past <paramref name="timeout"/> it is killed with its ranks and the test fails.</summary>
    public int WaitForExit(TimeSpan timeout)
    {
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"the job did not finish within {timeout.TotalSeconds:F0} s (killed with its ranks). Output:\n{Output}");
        }
        process.WaitForExit(); // drains the asynchronous readers
        return process.ExitCode;
    }

    public void Dispose()
    {
        if (!process.HasExited)
            process.Kill(entireProcessTree: true);
        process.Dispose();
    }

    private void Collect(string? line)
    {
        if (line is not null)
            lines.Enqueue(TerminalEscape().Replace(line, ""));
    }

    private static string? FindOnPath(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(folder => Path.Combine(folder, name)).FirstOrDefault(File.Exists);

    [GeneratedRegex(@"\x1B(\[[0-9;?]*[A-Za-z]|[=>])")]
    private static partial Regex TerminalEscape();

    [GeneratedRegex(@"^rank (\d+)/\d+: pid (\d+)")]
    private static partial Regex PidLine();
}

/// <summary>A fact that needs mpirun: skipped with the reason where it is missing, unless <see cref="MpiJob.RequireVariable"/> is set.</summary>
public sealed class MpiFactAttribute : FactAttribute
{
    public MpiFactAttribute([CallerFilePath] string? sourceFilePath = null, [CallerLineNumber] int sourceLineNumber = -1)
        : base(sourceFilePath, sourceLineNumber) => Skip = MpiJob.SkipReason;
}

/// <summary>A theory that needs mpirun (see <see cref="MpiFactAttribute"/>).</summary>
public sealed class MpiTheoryAttribute : TheoryAttribute
{
    public MpiTheoryAttribute([CallerFilePath] string? sourceFilePath = null, [CallerLineNumber] int sourceLineNumber = -1)
        : base(sourceFilePath, sourceLineNumber) => Skip = MpiJob.SkipReason;
}
