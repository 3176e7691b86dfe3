using System.CommandLine;

namespace GpuTransformer.Cli.Commands;

/// <summary><c>parity</c>: Compare every backend's kernels and a training step against each other. Placeholder: replace the body of <see cref="Create"/> when the command is written.</summary>
public static class ParityCommand
{
    public static Command Create(CliContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var command = new Command("parity", "Compare every backend's kernels and a training step against each other (not available yet)");
        context.SetAction(command, _ => throw new NotSupportedException("'parity' is not available in this build yet."));
        return command;
    }
}
