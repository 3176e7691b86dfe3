using System.Diagnostics;
using ILGPU.Runtime;

namespace GpuTransformer.Kernels.Workloads;

/// <summary>Which clock a <see cref="WorkloadTiming"/> was read from.</summary>
public enum TimingClock
{
    /// <summary>The host's monotonic clock around the launches and a device synchronization.</summary>
    Host,

    /// <summary>
    /// Device-side timestamps: ILGPU profiling markers recorded on the stream before and after the
    /// launches (CUDA events, OpenCL profiling events); host-side launch and synchronization
    /// costs stay out of the time. Needs a device created with <see cref="Backends.DeviceOptions.Profiling"/>.
    /// </summary>
    DeviceEvents,
}

/// <summary>Times of repeated runs: median and minimum of one run.</summary>
/// <param name="MedianSeconds">Median time of one run.</param>
/// <param name="MinSeconds">Fastest run.</param>
/// <param name="Repetitions">Samples timed (after the warm-up).</param>
/// <param name="LaunchesPerSample">Runs enqueued back to back in each sample (its time divided by this is one run).</param>
/// <param name="Clock">Where the times were read.</param>
public readonly record struct WorkloadTiming(double MedianSeconds, double MinSeconds, int Repetitions, int LaunchesPerSample = 1, TimingClock Clock = TimingClock.Host);

/// <summary>How <see cref="WorkloadTimer"/> repeats a workload.</summary>
/// <param name="Warmup">Untimed runs first (compilation, caches, clocks).</param>
/// <param name="MinRepetitions">Timed samples at least.</param>
/// <param name="MaxRepetitions">Timed samples at most.</param>
/// <param name="MinSeconds">Keep sampling (up to <paramref name="MaxRepetitions"/>) until the samples add up to this.</param>
/// <param name="MinSampleSeconds">
/// 0: one run per sample. Above 0: each sample enqueues as many runs back to back (no
/// synchronization between them, at most <see cref="WorkloadTimer.MaxLaunchesPerSample"/>) as
/// fill this time, judged from one synchronized run after the warm-up, so that a launch's and a
/// synchronization's fixed costs do not bias kernels that take microseconds.
/// </param>
public readonly record struct TimingPlan(int Warmup = 2, int MinRepetitions = 5, int MaxRepetitions = 50, double MinSeconds = 0.5, double MinSampleSeconds = 0)
{
    /// <summary>One warm-up and three timed runs: for the simulator and quick looks.</summary>
    public static TimingPlan Quick { get; } = new(1, 3, 3, 0);
}

/// <summary>
/// Times a workload the way every speed number of this project is taken: warm-up runs, then
/// timed samples, each one or more <see cref="KernelWorkload.Run"/>s followed by a device
/// synchronization; read from the host's monotonic clock, or from device events where the
/// device records them (<see cref="TimingClock"/>).
/// </summary>
public static class WorkloadTimer
{
    /// <summary>Most runs one sample enqueues without a synchronization.</summary>
    public const int MaxLaunchesPerSample = 1000;

    /// <summary>
    /// Times <paramref name="workload"/> under <paramref name="plan"/>: with device events when its
    /// device was created with profiling (<see cref="Backends.ComputeDevice.Profiling"/>), else the host clock.
    /// </summary>
    public static WorkloadTiming Measure(KernelWorkload workload, TimingPlan plan)
    {
        ArgumentNullException.ThrowIfNull(workload);
        var device = workload.Device;
        return Measure(workload.Run, device.Synchronize, plan, device.Profiling ? device.Stream : null);
    }

    /// <summary>
    /// Times <paramref name="run"/> (each sample followed by <paramref name="synchronize"/>) under
    /// <paramref name="plan"/>; with profiling markers on <paramref name="events"/> when given (a
    /// stream whose markers fail to record falls back to the host clock: the result's
    /// <see cref="WorkloadTiming.Clock"/> says which was read).
    /// </summary>
    public static WorkloadTiming Measure(Action run, Action synchronize, TimingPlan plan, AcceleratorStream? events = null)
    {
        ArgumentNullException.ThrowIfNull(run);
        ArgumentNullException.ThrowIfNull(synchronize);
        if (plan.MinRepetitions < 1 || plan.MaxRepetitions < plan.MinRepetitions || plan.Warmup < 0 || !(plan.MinSampleSeconds >= 0))
            throw new ArgumentException($"Invalid timing plan {plan}.", nameof(plan));
        for (var i = 0; i < plan.Warmup; i++)
        {
            run();
            synchronize();
        }
        var launches = 1;
        if (plan.MinSampleSeconds > 0)
        {
            var start = Stopwatch.GetTimestamp();
            run();
            synchronize();
            var once = Stopwatch.GetElapsedTime(start).TotalSeconds;
            launches = (int)Math.Clamp(Math.Ceiling(plan.MinSampleSeconds / Math.Max(once, 1e-9)), 1, MaxLaunchesPerSample);
        }
        if (events is not null && !MarkersWork(events, synchronize))
            events = null;
        var times = new List<double>(plan.MinRepetitions);
        var total = 0.0;
        while (times.Count < plan.MinRepetitions || (total < plan.MinSeconds && times.Count < plan.MaxRepetitions))
        {
            var seconds = Sample(run, synchronize, launches, events);
            times.Add(seconds / launches);
            total += seconds;
        }
        times.Sort();
        var middle = times.Count / 2;
        var median = times.Count % 2 == 1 ? times[middle] : (times[middle - 1] + times[middle]) / 2;
        return new WorkloadTiming(median, times[0], times.Count, launches, events is null ? TimingClock.Host : TimingClock.DeviceEvents);
    }

    /// <summary>Seconds of <paramref name="launches"/> runs, between two markers on <paramref name="events"/> when given, else on the host clock.</summary>
    private static double Sample(Action run, Action synchronize, int launches, AcceleratorStream? events)
    {
        var start = Stopwatch.GetTimestamp();
        using var begin = events?.AddProfilingMarker();
        for (var i = 0; i < launches; i++)
            run();
        using var end = events?.AddProfilingMarker();
        synchronize();
        var host = Stopwatch.GetElapsedTime(start).TotalSeconds;
        return begin is not null && end is not null ? end.MeasureFrom(begin).TotalSeconds : host;
    }

    /// <summary>Whether two profiling markers can be recorded on <paramref name="events"/> and measured.</summary>
    private static bool MarkersWork(AcceleratorStream events, Action synchronize)
    {
        try
        {
            using var begin = events.AddProfilingMarker();
            using var end = events.AddProfilingMarker();
            synchronize();
            return end.MeasureFrom(begin) >= TimeSpan.Zero;
        }
        catch (Exception e) when (e is NotSupportedException or InvalidOperationException or ILGPU.Runtime.Cuda.CudaException or ILGPU.Runtime.OpenCL.CLException)
        {
            return false;
        }
    }
}
