using System.CommandLine;

namespace GpuTransformer.Cli.Commands;

/// <summary><c>attention</c>: Plot attention heatmaps of a trained model for a prompt. Placeholder: replace the body of <see cref="Create"/> when the command is written.</summary>
public static class AttentionCommand
{
    public static Command Create(CliContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var command = new Command("attention", "Plot attention heatmaps of a trained model for a prompt (not available yet)");
        context.SetAction(command, _ => throw new NotSupportedException("'attention' is not available in this build yet."));
        return command;
    }
}
