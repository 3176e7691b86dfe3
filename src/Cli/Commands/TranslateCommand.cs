using System.CommandLine;

namespace GpuTransformer.Cli.Commands;

/// <summary><c>translate</c>: Train or run the encoder-decoder Transformer on a sequence-to-sequence task. Placeholder: replace the body of <see cref="Create"/> when the command is written.</summary>
public static class TranslateCommand
{
    public static Command Create(CliContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var command = new Command("translate", "Train or run the encoder-decoder Transformer on a sequence-to-sequence task (not available yet)");
        context.SetAction(command, _ => throw new NotSupportedException("'translate' is not available in this build yet."));
        return command;
    }
}
