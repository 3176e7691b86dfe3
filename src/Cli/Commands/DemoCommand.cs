using System.CommandLine;

namespace GpuTransformer.Cli.Commands;

/// <summary><c>demo</c>: A short end-to-end demonstration on the best backend. Placeholder: replace the body of <see cref="Create"/> when the command is written.</summary>
public static class DemoCommand
{
    public static Command Create(CliContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var command = new Command("demo", "A short end-to-end demonstration on the best backend (not available yet)");
        context.SetAction(command, _ => throw new NotSupportedException("'demo' is not available in this build yet."));
        return command;
    }
}
