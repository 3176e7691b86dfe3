namespace GpuTransformer.Training.Reporting;

/// <summary>What the trainer reports after a step.</summary>
/// <param name="Step">Steps done (1-based).</param>
/// <param name="Loss">Training loss of the step, nats/token.</param>
/// <param name="TokensPerSecond">Recent throughput.</param>
/// <param name="ValLoss">Latest validation loss, if any.</param>
public readonly record struct ProgressUpdate(long Step, double Loss, double TokensPerSecond, double? ValLoss = null);

/// <summary>The trainer's handle on the progress display.</summary>
public interface ITrainingProgress
{
    /// <summary>Updates the display (cheap; call every step).</summary>
    void Report(ProgressUpdate update);

    /// <summary>Prints a line (evaluation results, checkpoint saved) above the live display, or as a plain line.</summary>
    void Log(string line);
}
