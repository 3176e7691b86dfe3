using System.Diagnostics;

namespace GpuTransformer.Kernels.Workloads;

/// <summary>Wall-clock times of repeated runs, each synchronized: median and minimum.</summary>
/// <param name="MedianSeconds">Median time of one run.</param>
/// <param name="MinSeconds">Fastest run.</param>
/// <param name="Repetitions">Runs timed (after the warm-up).</param>
public readonly record struct WorkloadTiming(double MedianSeconds, double MinSeconds, int Repetitions);

/// <summary>How <see cref="WorkloadTimer"/> repeats a workload.</summary>
/// <param name="Warmup">Untimed runs first (compilation, caches, clocks).</param>
/// <param name="MinRepetitions">Timed runs at least.</param>
/// <param name="MaxRepetitions">Timed runs at most.</param>
/// <param name="MinSeconds">Keep repeating (up to <paramref name="MaxRepetitions"/>) until the timed runs add up to this.</param>
public readonly record struct TimingPlan(int Warmup = 2, int MinRepetitions = 5, int MaxRepetitions = 50, double MinSeconds = 0.5)
{
    /// <summary>One warm-up and three timed runs: for the simulator and quick looks.</summary>
    public static TimingPlan Quick { get; } = new(1, 3, 3, 0);
}

/// <summary>
/// Times a workload the way every speed number of this project is taken: warm-up runs, then
/// each timed run is <see cref="KernelWorkload.Run"/> followed by a device synchronization,
/// between two reads of a monotonic clock.
/// </summary>
public static class WorkloadTimer
{
    /// <summary>Times <paramref name="workload"/> under <paramref name="plan"/>.</summary>
    public static WorkloadTiming Measure(KernelWorkload workload, TimingPlan plan) =>
        Measure(() => workload.Run(), () => workload.Device.Synchronize(), plan);

    /// <summary>Times <paramref name="run"/> (each followed by <paramref name="synchronize"/>) under <paramref name="plan"/>.</summary>
    public static WorkloadTiming Measure(Action run, Action synchronize, TimingPlan plan)
    {
        ArgumentNullException.ThrowIfNull(run);
        ArgumentNullException.ThrowIfNull(synchronize);
        if (plan.MinRepetitions < 1 || plan.MaxRepetitions < plan.MinRepetitions || plan.Warmup < 0)
            throw new ArgumentException($"Invalid timing plan {plan}.", nameof(plan));
        for (var i = 0; i < plan.Warmup; i++)
        {
            run();
            synchronize();
        }
        var times = new List<double>(plan.MinRepetitions);
        var total = 0.0;
        while (times.Count < plan.MinRepetitions || (total < plan.MinSeconds && times.Count < plan.MaxRepetitions))
        {
            var start = Stopwatch.GetTimestamp();
            run();
            synchronize();
            var seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
            times.Add(seconds);
            total += seconds;
        }
        times.Sort();
        var middle = times.Count / 2;
        var median = times.Count % 2 == 1 ? times[middle] : (times[middle - 1] + times[middle]) / 2;
        return new WorkloadTiming(median, times[0], times.Count);
    }
}
