using System.CommandLine;

namespace GpuTransformer.Cli.Commands;

/// <summary><c>eval</c>: Evaluate a checkpoint on a corpus split (loss, perplexity). Placeholder: replace the body of <see cref="Create"/> when the command is written.</summary>
public static class EvalCommand
{
    public static Command Create(CliContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var command = new Command("eval", "Evaluate a checkpoint on a corpus split (loss, perplexity) (not available yet)");
        context.SetAction(command, _ => throw new NotSupportedException("'eval' is not available in this build yet."));
        return command;
    }
}
