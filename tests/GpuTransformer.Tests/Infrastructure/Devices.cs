namespace GpuTransformer.Tests.Infrastructure;

/// <summary>
/// One device per backend present on this machine, shared by every test (one xunit
/// collection, so tests never launch on one accelerator from two threads). Tests take a
/// backend name from <see cref="Backends"/> and run the same body on each.
/// <para>
/// <c>GPUTRANSFORMER_TEST_BACKENDS=cpu,opencl</c> restricts the list;
/// <c>GPUTRANSFORMER_REQUIRE_BACKENDS=cpu,opencl</c> makes a missing backend a failure
/// (CI sets it so that a broken PoCL install cannot pass silently).
/// </para>
/// </summary>
public sealed class Devices : IDisposable
{
    public const string TestBackendsVariable = "GPUTRANSFORMER_TEST_BACKENDS";
    public const string RequiredBackendsVariable = "GPUTRANSFORMER_REQUIRE_BACKENDS";

    private static readonly Lazy<IReadOnlyList<DeviceDescription>> Found = new(() => ComputeDevice.ListDevices());
    private readonly Dictionary<string, ComputeDevice> devices = [];
    private readonly Lock gate = new();

    /// <summary>The backends tests run on: those found here, filtered by <see cref="TestBackendsVariable"/>.</summary>
    public static IReadOnlyList<string> Available
    {
        get
        {
            var found = Found.Value.Select(d => d.BackendName).Distinct().ToList();
            var filter = Environment.GetEnvironmentVariable(TestBackendsVariable);
            if (!string.IsNullOrWhiteSpace(filter))
            {
                var wanted = filter.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
                found = found.Where(wanted.Contains).ToList();
            }
            return found;
        }
    }

    /// <summary>xunit member data: one row per available backend.</summary>
    public static TheoryData<string> Backends
    {
        get
        {
            var data = new TheoryData<string>();
            foreach (var backend in Available)
                data.Add(backend);
            return data;
        }
    }

    /// <summary>The device <see cref="Get(string)"/> creates for an available <paramref name="backend"/>, without creating it.</summary>
    public static DeviceDescription Describe(string backend) =>
        ComputeDevice.Choose(Found.Value, ComputeDevice.ParseBackend(backend), new DeviceOptions { AllowPortableOpenCL = true });

    /// <summary>Why <paramref name="backend"/> is not among <see cref="Available"/>: the driver's answer, or the filter.</summary>
    public static string WhyMissing(string backend)
    {
        Backend? parsed;
        try
        {
            parsed = ComputeDevice.ParseBackend(backend);
        }
        catch (ArgumentException e)
        {
            return e.Message;
        }
        var missing = ComputeDevice.MissingBackends(Found.Value).FirstOrDefault(m => m.Backend == parsed);
        return missing?.ToString() ?? $"{backend}: present but left out by {TestBackendsVariable}={Environment.GetEnvironmentVariable(TestBackendsVariable)}";
    }

    /// <summary>xunit member data: every available backend with every one of <paramref name="values"/>.</summary>
    public static TheoryData<string, T> BackendsTimes<T>(params IEnumerable<T> values)
    {
        var data = new TheoryData<string, T>();
        foreach (var backend in Available)
        {
            foreach (var value in values)
                data.Add(backend, value);
        }
        return data;
    }

    /// <summary>xunit member data: every available backend with every pair of <paramref name="values"/>.</summary>
    public static TheoryData<string, T1, T2> BackendsTimes<T1, T2>(params IEnumerable<(T1, T2)> values)
    {
        var data = new TheoryData<string, T1, T2>();
        foreach (var backend in Available)
        {
            foreach (var (first, second) in values)
                data.Add(backend, first, second);
        }
        return data;
    }

    /// <summary>Backends listed in <see cref="RequiredBackendsVariable"/>.</summary>
    public static IReadOnlyList<string> Required =>
        (Environment.GetEnvironmentVariable(RequiredBackendsVariable) ?? "")
            .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    /// <summary>The shared device for <paramref name="backend"/> with the backend's default tuning.</summary>
    public ComputeDevice Get(string backend)
    {
        lock (gate)
        {
            if (!devices.TryGetValue(backend, out var device))
            {
                device = ComputeDevice.Create(backend, new DeviceOptions { AllowPortableOpenCL = true });
                devices[backend] = device;
            }
            return device;
        }
    }

    /// <summary>A shared device for <paramref name="backend"/> with a tuning of the test's choice (to run other kernel instantiations).</summary>
    public ComputeDevice Get(string backend, KernelTuning tuning)
    {
        ArgumentNullException.ThrowIfNull(tuning);
        var key = $"{backend}/{tuning}";
        lock (gate)
        {
            if (!devices.TryGetValue(key, out var device))
            {
                device = ComputeDevice.Create(backend, new DeviceOptions { AllowPortableOpenCL = true, Tuning = tuning });
                devices[key] = device;
            }
            return device;
        }
    }

    /// <summary>
    /// A shared device of the first backend here that runs groups of <paramref name="threads"/>
    /// threads (GPU instantiations run on PoCL too), with its tuning changed by
    /// <paramref name="change"/>; null when only the simulator (64 threads) is present.
    /// </summary>
    public ComputeDevice? WithGroupsOf(int threads, Func<KernelTuning, KernelTuning> change)
    {
        ArgumentNullException.ThrowIfNull(change);
        var backend = Available.FirstOrDefault(b => Get(b).Description.MaxGroupSize >= threads);
        return backend is null ? null : Get(backend, change(Get(backend).Tuning));
    }

    public void Dispose()
    {
        foreach (var device in devices.Values)
            device.Dispose();
        devices.Clear();
    }
}

/// <summary>All tests that use devices join this collection.</summary>
[CollectionDefinition(Name)]
public sealed class DeviceCollection : ICollectionFixture<Devices>
{
    public const string Name = "Devices";
}
