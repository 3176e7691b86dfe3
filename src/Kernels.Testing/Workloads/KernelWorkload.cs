using GpuTransformer.Kernels.Backends;
using ILGPU;
using ILGPU.Runtime;

namespace GpuTransformer.Kernels.Workloads;

/// <summary>What a workload's speed is reported in.</summary>
public enum ThroughputUnit
{
    /// <summary>Arithmetic-bound kernels (matmul, attention): GFLOP/s.</summary>
    GflopsPerSecond,

    /// <summary>Memory-bound kernels: GB/s of the fewest bytes the operation must move (10⁹ bytes).</summary>
    GigabytesPerSecond,
}

/// <summary>
/// The work of one run of a workload: floating-point operations by the usual convention
/// (2 per multiply-add; attention counts only its matrix products) and the fewest bytes the
/// operation must move through device memory (each input read once, each output written once).
/// </summary>
/// <param name="Flops">Floating-point operations per run.</param>
/// <param name="Bytes">Bytes read plus bytes written per run, at least.</param>
/// <param name="Unit">Which of the two the speed is reported in.</param>
public readonly record struct WorkloadCost(double Flops, double Bytes, ThroughputUnit Unit)
{
    /// <summary>"GFLOP/s" or "GB/s".</summary>
    public string UnitName => Unit == ThroughputUnit.GflopsPerSecond ? "GFLOP/s" : "GB/s";

    /// <summary>The speed of one run that took <paramref name="seconds"/>, in <see cref="UnitName"/>.</summary>
    public double Rate(double seconds) => (Unit == ThroughputUnit.GflopsPerSecond ? Flops : Bytes) / seconds / 1e9;
}

/// <summary>
/// One kernel operation at one shape, as plain data: what the benchmarks, the comparison
/// runner and the <c>demo</c> command time and check. Its cost needs no device;
/// <see cref="Create"/> allocates random inputs on a device and gives the runnable workload.
/// </summary>
public abstract record WorkloadSpec
{
    /// <summary>The kernel family (the file under src/Kernels), e.g. "Matmul".</summary>
    public abstract string Family { get; }

    /// <summary>The operation inside the family, e.g. "tiled NN" or "forward+backward causal".</summary>
    public abstract string Operation { get; }

    /// <summary>The shape in the family's terms, e.g. "M 512, N 512, K 512".</summary>
    public abstract string Shape { get; }

    /// <summary>Work per run.</summary>
    public abstract WorkloadCost Cost { get; }

    /// <summary>Allocates inputs (random, from <paramref name="seed"/>) and outputs on <paramref name="device"/>.</summary>
    public abstract KernelWorkload Create(ComputeDevice device, int seed = 1);

    /// <inheritdoc/>
    public sealed override string ToString() => $"{Family} {Operation} [{Shape}]";
}

/// <summary>
/// A workload on a device: <see cref="Run"/> enqueues the operation (no synchronization:
/// timers synchronize around it), <see cref="Check"/> runs it once from its initial inputs
/// and compares every output with the family's C# reference twin.
/// </summary>
public abstract class KernelWorkload : IDisposable
{
    private readonly List<IDisposable> owned = [];

    /// <summary>A workload of <paramref name="spec"/> on <paramref name="device"/>.</summary>
    protected KernelWorkload(ComputeDevice device, WorkloadSpec spec)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(spec);
        Device = device;
        Spec = spec;
    }

    /// <summary>The device it runs on.</summary>
    public ComputeDevice Device { get; }

    /// <summary>What it runs.</summary>
    public WorkloadSpec Spec { get; }

    /// <summary>Enqueues one run on the device stream; does not wait for it.</summary>
    public abstract void Run();

    /// <summary>Runs once from the initial inputs, waits, and compares every output with the reference.</summary>
    public abstract WorkloadCheck Check();

    /// <summary>Frees the device buffers.</summary>
    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Frees the device buffers (and whatever a subclass owns when <paramref name="disposing"/>).</summary>
    protected virtual void Dispose(bool disposing)
    {
        if (!disposing)
            return;
        foreach (var item in owned)
            item.Dispose();
        owned.Clear();
    }

    /// <summary>Takes ownership of <paramref name="item"/> (disposed with the workload).</summary>
    protected T Own<T>(T item)
        where T : IDisposable
    {
        owned.Add(item);
        return item;
    }

    /// <summary>A new device buffer holding <paramref name="values"/>.</summary>
    protected ArrayView<T> Upload<T>(T[] values)
        where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(values);
        var buffer = Own(Device.Accelerator.Allocate1D<T>(Math.Max(1, values.Length)));
        if (values.Length > 0)
            buffer.View.SubView(0, values.Length).CopyFromCPU(Device.Stream, values);
        return buffer.View.SubView(0, Math.Max(1, values.Length));
    }

    /// <summary>A new device buffer of <paramref name="count"/> elements, zeroed.</summary>
    protected ArrayView<T> Allocate<T>(long count)
        where T : unmanaged
    {
        var buffer = Own(Device.Accelerator.Allocate1D<T>(Math.Max(1, count)));
        buffer.MemSetToZero(Device.Stream);
        return buffer.View;
    }

    /// <summary>Overwrites the start of <paramref name="view"/> with <paramref name="values"/>.</summary>
    protected void Write<T>(ArrayView<T> view, T[] values)
        where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(values);
        view.SubView(0, values.Length).CopyFromCPU(Device.Stream, values);
    }

    /// <summary>Fills the first <paramref name="count"/> elements with NaN, so that an element a kernel fails to write fails the check.</summary>
    protected void Poison(ArrayView<float> view, long count)
    {
        var nan = new float[count];
        Array.Fill(nan, float.NaN);
        Write(view, nan);
    }

    /// <summary>Waits for the device and copies the first <paramref name="count"/> elements of <paramref name="view"/> back.</summary>
    protected T[] Download<T>(ArrayView<T> view, long count)
        where T : unmanaged
    {
        Device.Synchronize();
        var values = new T[count];
        if (count > 0)
            view.SubView(0, count).CopyToCPU(Device.Stream, values);
        Device.Synchronize();
        return values;
    }

    /// <summary>Uniform values in [−scale, scale).</summary>
    protected static float[] RandomFloats(Random random, long count, float scale = 1f)
    {
        ArgumentNullException.ThrowIfNull(random);
        var values = new float[count];
        for (var i = 0; i < values.Length; i++)
            values[i] = (float)((random.NextDouble() * 2 - 1) * scale);
        return values;
    }

    /// <summary>Integers in [0, max).</summary>
    protected static int[] RandomInts(Random random, long count, int max)
    {
        ArgumentNullException.ThrowIfNull(random);
        var values = new int[count];
        for (var i = 0; i < values.Length; i++)
            values[i] = random.Next(max);
        return values;
    }
}

/// <summary>
/// The result of <see cref="KernelWorkload.Check"/>: the largest absolute difference from
/// the reference over all outputs, and the worst ratio |Δ| / (atol + rtol·|reference|)
/// (pass: ≤ 1; NaN where the reference is finite fails).
/// </summary>
/// <param name="MaxAbsError">max |actual − reference| over every compared element.</param>
/// <param name="WorstRatio">max |Δ| / (atol + rtol·|reference|); +∞ for a NaN or ∞ that the reference lacks.</param>
/// <param name="Tolerance">The tolerances, e.g. "atol 1e-05, rtol 0.0001".</param>
/// <param name="Elements">How many elements were compared.</param>
/// <param name="Worst">The element with the worst ratio: output name, index, reference and device values.</param>
public readonly record struct WorkloadCheck(double MaxAbsError, double WorstRatio, string Tolerance, long Elements, string Worst)
{
    /// <summary>Whether every element was within tolerance.</summary>
    public bool Passed => Elements > 0 && WorstRatio <= 1;
}

/// <summary>Accumulates the comparison of several outputs into one <see cref="WorkloadCheck"/>.</summary>
public sealed class WorkloadComparison
{
    private readonly List<string> tolerances = [];
    private double maxAbs;
    private double worst;
    private string worstElement = "";
    private long elements;

    /// <summary>Compares the output <paramref name="name"/>: <paramref name="actual"/> with <paramref name="expected"/> element by element.</summary>
    /// <exception cref="ArgumentException">The lengths differ.</exception>
    public WorkloadComparison Add(string name, ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, double atol, double rtol)
    {
        if (expected.Length != actual.Length)
            throw new ArgumentException($"Reference has {expected.Length} elements, the device output {actual.Length}.", nameof(actual));
        var tolerance = $"{name}: atol {atol:G2}, rtol {rtol:G2}";
        if (!tolerances.Contains(tolerance))
            tolerances.Add(tolerance);
        for (var i = 0; i < expected.Length; i++)
        {
            double e = expected[i], a = actual[i];
            double ratio;
            if (double.IsNaN(e) && double.IsNaN(a))
                continue;
            var difference = Math.Abs(a - e);
            if (difference == 0)
                continue;
            if (!double.IsFinite(difference))
                ratio = e.Equals(a) ? 0 : double.PositiveInfinity;
            else
            {
                maxAbs = Math.Max(maxAbs, difference);
                ratio = difference / (atol + rtol * Math.Abs(e));
            }
            if (ratio > worst)
            {
                worst = ratio;
                worstElement = $"{name}[{i}]: reference {e:G9}, device {a:G9}";
            }
        }
        elements += expected.Length;
        return this;
    }

    /// <summary>The accumulated result.</summary>
    public WorkloadCheck Result() => new(maxAbs, worst, string.Join("; ", tolerances), elements, worstElement);
}
