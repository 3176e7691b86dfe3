namespace GpuTransformer.Training.Schedules;

/// <summary>A learning rate as a pure function of the optimizer step (1 for the first update).</summary>
public interface ILearningRateSchedule
{
    /// <summary>The learning rate of update <paramref name="step"/> (1-based).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="step"/> &lt; 1.</exception>
    double At(long step);
}

/// <summary>
/// Linear warmup to <see cref="PeakLearningRate"/> over <see cref="WarmupSteps"/>, then cosine decay to
/// <see cref="MinLearningRate"/> at <see cref="TotalSteps"/>, constant after:
/// lr(s) = peak · s / warmup for s ≤ warmup;
/// lr(s) = min + ½ (peak − min) (1 + cos(π · p)), p = min(1, (s − warmup) / (total − warmup)) after.
/// </summary>
public sealed record WarmupCosineSchedule(double PeakLearningRate, long WarmupSteps, long TotalSteps, double MinLearningRate = 0) : ILearningRateSchedule
{
    /// <inheritdoc/>
    public double At(long step) => LearningRateSchedules.WarmupCosine(step, PeakLearningRate, WarmupSteps, TotalSteps, MinLearningRate);

    /// <inheritdoc/>
    public override string ToString() =>
        $"warmup {WarmupSteps} steps to {PeakLearningRate:G3}, cosine to {MinLearningRate:G3} at step {TotalSteps}";
}

/// <summary>
/// The schedule of "Attention Is All You Need" (§5.3):
/// lr(s) = scale · d_model^−0.5 · min(s^−0.5, s · warmup^−1.5), rising linearly for <see cref="WarmupSteps"/>
/// steps, peaking at scale · (d_model · warmup)^−0.5, then decaying as 1/√s. The paper uses scale 1,
/// warmup 4000.
/// </summary>
public sealed record InverseSqrtSchedule(int DModel, long WarmupSteps = 4000, double Scale = 1.0) : ILearningRateSchedule
{
    /// <inheritdoc/>
    public double At(long step) => LearningRateSchedules.InverseSqrt(step, DModel, WarmupSteps, Scale);

    /// <summary>The largest learning rate, reached at step = warmup.</summary>
    public double Peak => Scale / Math.Sqrt((double)DModel * WarmupSteps);

    /// <inheritdoc/>
    public override string ToString() =>
        $"inverse square root (d_model {DModel}, warmup {WarmupSteps}, scale {Scale:G3}; peak {Peak:G3})";
}

/// <summary>The schedules' formulas as static functions.</summary>
public static class LearningRateSchedules
{
    /// <summary>See <see cref="WarmupCosineSchedule"/>.</summary>
    public static double WarmupCosine(long step, double peak, long warmupSteps, long totalSteps, double min = 0)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(step, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(warmupSteps);
        ArgumentOutOfRangeException.ThrowIfLessThan(totalSteps, warmupSteps);
        if (step <= warmupSteps)
            return peak * step / warmupSteps;
        var decaySteps = totalSteps - warmupSteps;
        var progress = decaySteps == 0 ? 1.0 : Math.Min(1.0, (double)(step - warmupSteps) / decaySteps);
        return min + 0.5 * (peak - min) * (1 + Math.Cos(Math.PI * progress));
    }

    /// <summary>See <see cref="InverseSqrtSchedule"/>.</summary>
    public static double InverseSqrt(long step, int dModel, long warmupSteps, double scale = 1.0)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(step, 1);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(dModel);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(warmupSteps);
        return scale / Math.Sqrt(dModel) * Math.Min(1 / Math.Sqrt(step), step * Math.Pow(warmupSteps, -1.5));
    }
}
