using System.CommandLine;

namespace GpuTransformer.Cli.Commands;

/// <summary><c>generate</c>: Sample text from a trained language model. Placeholder: replace the body of <see cref="Create"/> when the command is written.</summary>
public static class GenerateCommand
{
    public static Command Create(CliContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var command = new Command("generate", "Sample text from a trained language model (not available yet)");
        context.SetAction(command, _ => throw new NotSupportedException("'generate' is not available in this build yet."));
        return command;
    }
}
