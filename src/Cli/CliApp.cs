using System.CommandLine;
using GpuTransformer.Cli.Commands;
using Spectre.Console;

namespace GpuTransformer.Cli;

/// <summary>
/// The <c>gpu-transformer</c> command line: global options (<see cref="GlobalOptions"/>) and one
/// command per file under <c>Commands/</c>. Exit codes: 0 success, 1 a failure while running
/// (bad path, missing corpus, no such device), 2 a usage error (unknown option or value).
/// Errors print one line to stderr, <c>error: …</c>; <c>--verbose</c> adds the stack trace.
/// </summary>
public static class CliApp
{
    /// <summary>Exit code of a failure while running.</summary>
    public const int Failure = 1;

    /// <summary>Exit code of a usage error.</summary>
    public const int UsageError = 2;

    /// <summary>Runs the command line on the process's console.</summary>
    public static int Run(string[] args) => Run(args, Console.Out, Console.Error, interactive: null);

    /// <summary>Runs the command line with output captured (tests): <paramref name="stdout"/>, <paramref name="stderr"/>; <paramref name="interactive"/> null: detect.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr, bool? interactive = false)
    {
        ArgumentNullException.ThrowIfNull(args);
        var console = stdout == Console.Out && interactive is null
            ? AnsiConsole.Console
            : AnsiConsole.Create(new AnsiConsoleSettings
            {
                Out = new AnsiConsoleOutput(stdout),
                Ansi = interactive == true ? AnsiSupport.Yes : AnsiSupport.No,
                ColorSystem = interactive == true ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
                Interactive = interactive == true ? InteractionSupport.Yes : InteractionSupport.No,
            });
        // Piped or captured output gets a wide virtual console rather than Spectre's 80 columns, so tables stay readable in logs.
        if (!console.Profile.Capabilities.Interactive || Console.IsOutputRedirected)
            console.Profile.Width = Math.Max(console.Profile.Width, 160);
        var context = new CliContext(console, stdout, stderr, new GlobalOptions(), interactive);
        var root = BuildRoot(context);
        var parsed = root.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            foreach (var error in parsed.Errors)
                stderr.WriteLine($"error: {error.Message}");
            stderr.WriteLine("Run 'gpu-transformer --help' for usage.");
            return UsageError;
        }
        return parsed.Invoke(new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false });
    }

    /// <summary>The root command with every subcommand.</summary>
    internal static RootCommand BuildRoot(CliContext context)
    {
        var root = new RootCommand(
            "GpuTransformer: a Transformer on hand-written ILGPU kernels (CUDA, OpenCL, CPU). " +
            "Trains and samples language models, translates, plots attention.");
        context.Globals.AddTo(root);
        foreach (var command in Commands(context))
            root.Subcommands.Add(command);
        return root;
    }

    private static IEnumerable<Command> Commands(CliContext context) =>
    [
        DevicesCommand.Create(context),
        CorpusCommand.Create(context),
        TrainCommand.Create(context),
        EvalCommand.Create(context),
        GenerateCommand.Create(context),
        TranslateCommand.Create(context),
        AttentionCommand.Create(context),
        ScoreCommand.Create(context),
        ParityCommand.Create(context),
        DemoCommand.Create(context),
    ];
}
