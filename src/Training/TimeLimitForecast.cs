namespace GpuTransformer.Training;

/// <summary>
/// Whether one more optimizer step still fits in a time limit together with the evaluation and
/// checkpoint that would close the run after it: the step time as an exponential moving average
/// (weight 0.2 on the newest step, so one slow step does not end a run), the last evaluation's and
/// the last checkpoint's durations as they were.
/// </summary>
internal sealed class TimeLimitForecast
{
    private double step;
    private double evaluation;
    private double checkpoint;

    /// <summary>A step took <paramref name="seconds"/>.</summary>
    public void StepTook(double seconds) => step = step == 0 ? seconds : (0.8 * step) + (0.2 * seconds);

    /// <summary>An evaluation took <paramref name="seconds"/>.</summary>
    public void EvaluationTook(double seconds) => evaluation = seconds;

    /// <summary>A checkpoint took <paramref name="seconds"/>.</summary>
    public void CheckpointTook(double seconds) => checkpoint = seconds;

    /// <summary>Would another step, its evaluation and its checkpoint, started at <paramref name="elapsedSeconds"/>, end after <paramref name="limit"/>?</summary>
    public bool Exceeds(double elapsedSeconds, TimeSpan limit) => elapsedSeconds + step + evaluation + checkpoint > limit.TotalSeconds;
}
