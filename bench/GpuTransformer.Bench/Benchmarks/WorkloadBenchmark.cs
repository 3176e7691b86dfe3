using BenchmarkDotNet.Attributes;
using GpuTransformer.Kernels.Workloads;

namespace GpuTransformer.Bench.Benchmarks;

/// <summary>
/// Base of every benchmark class: the <see cref="Backend"/> parameter, one workload per case
/// built from the parameters (<see cref="Spec"/>), set up outside the measurement, and a
/// measured operation that runs it and synchronizes the device. Subclasses declare their
/// size parameters, say which of them is the simulator's tiny size (<see cref="Tiny"/>), and
/// one <c>[Benchmark]</c> method calling <see cref="RunAndSynchronize"/>.
/// </summary>
public abstract class WorkloadBenchmark
{
    private KernelWorkload? workload;

    /// <summary>cuda, opencl or simulator (only those present; see <see cref="BenchDevices"/>).</summary>
    [ParamsSource(nameof(Backends))]
    public string Backend { get; set; } = "";

    /// <summary>The backends present.</summary>
    public static IEnumerable<string> Backends => BenchDevices.Labels;

    /// <summary>Whether the parameters are the tiny case, the only one the simulator runs (and the only one real backends skip).</summary>
    public abstract bool Tiny { get; }

    /// <summary>The workload of the current parameters (needs no device: the throughput column reads its cost).</summary>
    public abstract WorkloadSpec Spec { get; }

    /// <summary>Allocates the inputs and runs once (compiles the kernels) before any measurement.</summary>
    [GlobalSetup]
    public void Setup()
    {
        workload = Spec.Create(BenchDevices.Get(Backend));
        RunAndSynchronize();
    }

    /// <summary>Frees the device buffers.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        workload?.Dispose();
        workload = null;
    }

    /// <summary>The measured operation: enqueue the workload and wait for the device.</summary>
    protected void RunAndSynchronize()
    {
        var current = workload ?? throw new InvalidOperationException("Setup has not run.");
        current.Run();
        current.Device.Synchronize();
    }
}
