using System.Diagnostics;
using GpuTransformer.Kernels.Backends;

namespace GpuTransformer.Kernels.Profiling;

/// <summary>Which part of a step a launch belongs to.</summary>
public enum ProfilePhase
{
    /// <summary>Outside any phase scope (e.g. a caller's own launches).</summary>
    Other,

    /// <summary>The model's forward and the loss.</summary>
    Forward,

    /// <summary>The model's backward.</summary>
    Backward,

    /// <summary>Gradient zeroing, the global-norm clip and AdamW.</summary>
    Optimizer,

    /// <summary>Generation: one incremental (or whole-window) forward per token, and sampling.</summary>
    Decode,
}

/// <summary>What a profile row's time was spent on.</summary>
public enum ProfileRowKind
{
    /// <summary>Kernels of one family launched and run to completion.</summary>
    Kernel,

    /// <summary>Host → device copies.</summary>
    Upload,

    /// <summary>Device → host copies (and the wait for the stream they imply).</summary>
    ReadBack,

    /// <summary>
    /// Waiting for the device outside any kernel scope: explicit synchronizations, and device
    /// work launched outside a family (memsets, copies) that the next scope waits for.
    /// </summary>
    Synchronize,

    /// <summary>What remains of the measured time: the host's own work between launches (validation, bookkeeping, the CLR).</summary>
    Host,
}

/// <summary>
/// A per-kernel-family profiler: attached to a <see cref="ComputeDevice"/> it times every
/// launch of every kernel family (each family's entry point opens a <see cref="ProfileScope"/>
/// around its launches) and every upload, read-back and synchronization, per phase (forward,
/// backward, optimizer, decode) and per layer (models open a layer scope around each block), and
/// makes a <see cref="ProfileReport"/> whose rows add up to the measured time.
/// <para>
/// Timing is synchronize-and-time on every backend: a scope waits for the stream before and
/// after its launches and reads the host clock (ILGPU's profiling markers time a stream's
/// commands but not the host's share, and PoCL queues record none unless the context was built
/// for it). So a profiled step is slower than an unprofiled one by one synchronization per
/// launch; shares, not absolute times, are what to read. With no profiler attached a scope is
/// a default struct: no synchronization, no allocation, one null check.
/// </para>
/// Only time between <see cref="Start"/> and <see cref="Stop"/> counts (warm-up steps stay out).
/// Scopes nest: a family that calls another inside its own scope is timed once, as the outer one.
/// Not thread-safe: one host thread drives a device.
/// </summary>
public sealed class KernelProfiler
{
    private readonly ComputeDevice device;
    private readonly Dictionary<ProfileKey, ProfileTotals> totals = [];
    private int depth;
    private bool running;
    private long windowStart;
    private long measuredTicks;
    private long steps;

    private KernelProfiler(ComputeDevice device) => this.device = device;

    /// <summary>The device it profiles.</summary>
    public ComputeDevice Device => device;

    /// <summary>The phase launches are attributed to now (set with <see cref="ComputeDevice.InPhase"/>).</summary>
    public ProfilePhase Phase { get; internal set; }

    /// <summary>The layer launches are attributed to now ("" outside any layer scope).</summary>
    public string Layer { get; internal set; } = "";

    /// <summary>Whether a measured window is open.</summary>
    public bool Running => running;

    /// <summary>Steps (or tokens) counted over all windows.</summary>
    public long Steps => steps;

    /// <summary>Attaches a new profiler to <paramref name="device"/> (replacing any other); detach with <see cref="Detach"/>.</summary>
    public static KernelProfiler Attach(ComputeDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        var profiler = new KernelProfiler(device);
        device.Profiler = profiler;
        return profiler;
    }

    /// <summary>Detaches from the device: its launches cost nothing again.</summary>
    public void Detach()
    {
        if (ReferenceEquals(device.Profiler, this))
            device.Profiler = null;
    }

    /// <summary>Opens a measured window: waits for the device (outside the window), then starts the clock.</summary>
    /// <exception cref="InvalidOperationException">A window is already open.</exception>
    public void Start()
    {
        if (running)
            throw new InvalidOperationException("The profiler's window is already open (Stop it first).");
        device.Accelerator.Synchronize();
        depth = 0;
        running = true;
        windowStart = Stopwatch.GetTimestamp();
    }

    /// <summary>Closes the window after <paramref name="stepsInWindow"/> steps (or tokens): waits for the device, inside the window.</summary>
    /// <exception cref="InvalidOperationException">No window is open.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A negative step count.</exception>
    public void Stop(long stepsInWindow)
    {
        if (!running)
            throw new InvalidOperationException("The profiler has no open window (Start it first).");
        ArgumentOutOfRangeException.ThrowIfNegative(stepsInWindow);
        using (Enter(ProfileRowKind.Synchronize, "synchronize", "end of window", 0, 0))
            device.Accelerator.Synchronize();
        measuredTicks += Stopwatch.GetTimestamp() - windowStart;
        running = false;
        steps += stepsInWindow;
    }

    /// <summary>The report of every window so far (the remainder of the measured time becomes the host row).</summary>
    /// <param name="title">What was profiled (e.g. the command and the model).</param>
    /// <param name="stepUnit">What a step is ("step", "token").</param>
    public ProfileReport Report(string title, string stepUnit = "step")
    {
        var entries = totals
            .Select(t => new ProfileEntry(t.Key.Kind, t.Key.Phase, t.Key.Layer, t.Key.Family, t.Key.Kernel, t.Value.Calls,
                Seconds(t.Value.Ticks), t.Value.Flops, t.Value.Bytes))
            .OrderByDescending(e => e.Seconds)
            .ToList();
        return new ProfileReport(title, device.Description.ToString(), stepUnit, steps, Seconds(measuredTicks), entries);
    }

    /// <summary>Forgets every window and row.</summary>
    public void Reset()
    {
        totals.Clear();
        measuredTicks = 0;
        steps = 0;
        running = false;
        depth = 0;
    }

    /// <summary>Opens a timed scope (outermost only; nested scopes count into their parent).</summary>
    internal ProfileScope Enter(ProfileRowKind kind, string family, string kernel, double flops, double bytes)
    {
        if (!running)
            return default;
        if (depth++ > 0)
            return new ProfileScope(this, 0, kind, family, kernel, flops, bytes);
        // Whatever the device still runs was launched outside a scope (a memset, a copy): waiting for it is a synchronization.
        var before = Stopwatch.GetTimestamp();
        device.Accelerator.Synchronize();
        var start = Stopwatch.GetTimestamp();
        Add(new ProfileKey(ProfileRowKind.Synchronize, Phase, Layer, "synchronize", "unscoped device work"), start - before, 0, 0, 0);
        return new ProfileScope(this, start, kind, family, kernel, flops, bytes);
    }

    /// <summary>Closes a scope: waits for its launches and adds its time.</summary>
    internal void Exit(in ProfileScope scope)
    {
        if (!running)
            return;
        depth--;
        if (scope.Start == 0)
            return;
        device.Accelerator.Synchronize();
        Add(new ProfileKey(scope.Kind, Phase, Layer, scope.Family, scope.Kernel), Stopwatch.GetTimestamp() - scope.Start, 1, scope.Flops, scope.Bytes);
    }

    private void Add(ProfileKey key, long ticks, long calls, double flops, double bytes)
    {
        if (calls == 0 && ticks == 0)
            return;
        totals.TryGetValue(key, out var sum);
        totals[key] = new ProfileTotals(sum.Calls + calls, sum.Ticks + ticks, sum.Flops + flops, sum.Bytes + bytes);
    }

    private static double Seconds(long ticks) => (double)ticks / Stopwatch.Frequency;

    private readonly record struct ProfileKey(ProfileRowKind Kind, ProfilePhase Phase, string Layer, string Family, string Kernel);

    private readonly record struct ProfileTotals(long Calls, long Ticks, double Flops, double Bytes);
}

/// <summary>
/// A timed region of a <see cref="KernelProfiler"/>: a family's launches, an upload, a read-back
/// or a synchronization. The default value (no profiler attached) does nothing. Dispose it once.
/// </summary>
public readonly struct ProfileScope : IDisposable
{
    private readonly KernelProfiler? profiler;

    internal ProfileScope(KernelProfiler profiler, long start, ProfileRowKind kind, string family, string kernel, double flops, double bytes)
    {
        this.profiler = profiler;
        Start = start;
        Kind = kind;
        Family = family;
        Kernel = kernel;
        Flops = flops;
        Bytes = bytes;
    }

    internal long Start { get; }

    internal ProfileRowKind Kind { get; }

    internal string Family { get; }

    internal string Kernel { get; }

    internal double Flops { get; }

    internal double Bytes { get; }

    /// <summary>Ends the scope (waits for the device when profiling).</summary>
    public void Dispose() => profiler?.Exit(this);
}

/// <summary>Restores the previous phase or layer of a <see cref="KernelProfiler"/> when disposed; the default value does nothing.</summary>
public readonly struct ProfileLabelScope : IDisposable
{
    private readonly KernelProfiler? profiler;
    private readonly ProfilePhase phase;
    private readonly string? layer;

    internal ProfileLabelScope(KernelProfiler profiler, ProfilePhase phase, string layer)
    {
        this.profiler = profiler;
        this.phase = phase;
        this.layer = layer;
    }

    /// <summary>Restores the phase and layer that were current when the scope opened.</summary>
    public void Dispose()
    {
        if (profiler is null)
            return;
        profiler.Phase = phase;
        profiler.Layer = layer ?? "";
    }
}
