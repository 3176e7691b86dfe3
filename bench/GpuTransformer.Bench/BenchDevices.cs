using GpuTransformer.Kernels.Backends;

namespace GpuTransformer.Bench;

/// <summary>
/// The backends benchmarks run on, by label, and one device per label for the whole process
/// (benchmarks run in-process, so kernels compile once per backend). ILGPU's CPU accelerator
/// is labelled <c>simulator</c>: it is a correctness backend, never a CPU backend, and runs
/// only the tiny shapes.
/// </summary>
public static class BenchDevices
{
    /// <summary>Label of ILGPU's CPU simulator.</summary>
    public const string Simulator = "simulator";

    /// <summary>Environment variable restricting the labels (comma-separated), like <c>--backends</c>.</summary>
    public const string BackendsVariable = "GPUTRANSFORMER_BENCH_BACKENDS";

    private static readonly Dictionary<string, ComputeDevice> Devices = [];
    private static readonly Lock Gate = new();

    /// <summary>Labels given on the command line (<c>--backends</c>), or null for every backend present.</summary>
    public static IReadOnlyList<string>? Requested { get; set; }

    /// <summary>The labels of the backends present here (cuda, opencl, simulator), restricted by <see cref="Requested"/> or <see cref="BackendsVariable"/>.</summary>
    public static IReadOnlyList<string> Labels
    {
        get
        {
            var present = ComputeDevice.ListDevices(new DeviceOptions { AllowPortableOpenCL = true })
                .Select(d => Label(d.Backend))
                .Distinct()
                .ToList();
            var wanted = Requested ?? Environment.GetEnvironmentVariable(BackendsVariable)?
                .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(Normalize)
                .ToList();
            return wanted is null ? present : present.Where(wanted.Contains).ToList();
        }
    }

    /// <summary>The label of <paramref name="backend"/>.</summary>
    public static string Label(Backend backend) => backend == Backend.Cpu ? Simulator : ComputeDevice.BackendName(backend);

    /// <summary>A backend name as the CLI spells it (cpu, simulator, opencl, cuda) turned into its label.</summary>
    public static string Normalize(string name) =>
        ComputeDevice.ParseBackend(name) is { } backend ? Label(backend) : throw new ArgumentException("'auto' is not a benchmark backend; name one.", nameof(name));

    /// <summary>The shared device of <paramref name="label"/>.</summary>
    public static ComputeDevice Get(string label)
    {
        lock (Gate)
        {
            if (!Devices.TryGetValue(label, out var device))
            {
                device = ComputeDevice.Create(label == Simulator ? "cpu" : label, new DeviceOptions { AllowPortableOpenCL = true });
                Devices[label] = device;
            }
            return device;
        }
    }

    /// <summary>Disposes every device (at exit).</summary>
    public static void DisposeAll()
    {
        lock (Gate)
        {
            foreach (var device in Devices.Values)
                device.Dispose();
            Devices.Clear();
        }
    }
}
