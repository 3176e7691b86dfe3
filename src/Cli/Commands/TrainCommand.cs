using System.CommandLine;

namespace GpuTransformer.Cli.Commands;

/// <summary><c>train</c>: Train a language model (decoder-only Transformer) on a corpus. Placeholder: replace the body of <see cref="Create"/> when the command is written.</summary>
public static class TrainCommand
{
    public static Command Create(CliContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var command = new Command("train", "Train a language model (decoder-only Transformer) on a corpus (not available yet)");
        context.SetAction(command, _ => throw new NotSupportedException("'train' is not available in this build yet."));
        return command;
    }
}
