using System.Collections.Concurrent;
using System.Reflection;
using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime.OpenCL;
using GpuTransformer.Kernels.Profiling;

namespace GpuTransformer.Kernels.Backends;

/// <summary>The three ILGPU backends GpuTransformer runs on.</summary>
public enum Backend
{
    /// <summary>ILGPU's CPU accelerator: a simulator, for correctness only.</summary>
    Cpu,

    /// <summary>OpenCL: AMD/Intel GPUs, and PoCL on the CPU (our fast CPU path).</summary>
    OpenCL,

    /// <summary>NVIDIA GPUs through CUDA.</summary>
    Cuda,
}

/// <summary>What kind of processor a device is.</summary>
public enum DeviceKind
{
    /// <summary>A GPU (CUDA, or an OpenCL GPU).</summary>
    Gpu,

    /// <summary>A CPU behind OpenCL (PoCL, Intel's runtime).</summary>
    Cpu,

    /// <summary>ILGPU's CPU accelerator, which simulates warps and groups on threads.</summary>
    Simulator,

    /// <summary>An OpenCL device of another type (accelerator, custom).</summary>
    Other,
}

/// <summary>One device found on this machine, as <c>devices</c> lists it.</summary>
/// <param name="Backend">The ILGPU backend that drives it.</param>
/// <param name="IndexInBackend">Index among the devices of the same backend.</param>
/// <param name="Name">The driver's device name.</param>
/// <param name="Kind">GPU, CPU (e.g. PoCL) or the ILGPU simulator.</param>
/// <param name="MemoryBytes">Device memory in bytes.</param>
/// <param name="MaxGroupSize">Most threads in one group.</param>
/// <param name="WarpSize">Threads per warp / sub-group.</param>
/// <param name="Multiprocessors">Compute units.</param>
/// <param name="SharedMemoryPerGroup">Shared (local) memory per group in bytes.</param>
/// <param name="Features">What the device supports, for the listing (e.g. "fp16, fp64, generic address space").</param>
/// <param name="NeedsPortableOptIn">OpenCL device that ILGPU refuses (no generic address space) but our portable kernels can run on with the opt-in.</param>
public sealed record DeviceDescription(
    Backend Backend,
    int IndexInBackend,
    string Name,
    DeviceKind Kind,
    long MemoryBytes,
    int MaxGroupSize,
    int WarpSize,
    int Multiprocessors,
    int SharedMemoryPerGroup,
    string Features,
    bool NeedsPortableOptIn)
{
    /// <summary>Name of the backend as the command line spells it.</summary>
    public string BackendName => ComputeDevice.BackendName(Backend);

    /// <inheritdoc/>
    public override string ToString() =>
        $"{BackendName}:{IndexInBackend} {Name} ({Kind}, {MemoryBytes / (1024 * 1024)} MiB, group ≤ {MaxGroupSize}, warp {WarpSize}, {Multiprocessors} CUs; {Features})";
}

/// <summary>A backend with no device on this machine, and why.</summary>
/// <param name="Backend">The backend.</param>
/// <param name="Reason">One line: the driver library that is not there, or the driver call that failed and its error.</param>
/// <param name="DriverPresent">
/// The backend's driver is installed (the library loads, or OpenCL has a platform), so the
/// absence is a fault to fix rather than a machine without that kind of hardware.
/// </param>
public sealed record MissingBackend(Backend Backend, string Reason, bool DriverPresent)
{
    /// <inheritdoc/>
    public override string ToString() => $"{ComputeDevice.BackendName(Backend)}: {Reason}";
}

/// <summary>Options for choosing and creating a device.</summary>
public sealed record DeviceOptions
{
    /// <summary>Environment variable that turns on <see cref="AllowPortableOpenCL"/>.</summary>
    public const string PortableOpenCLVariable = "GPUTRANSFORMER_OPENCL_PORTABLE";

    /// <summary>
    /// Run on OpenCL devices that ILGPU refuses because they lack the generic address
    /// space (PoCL, older drivers). Safe for GpuTransformer's portable kernels, which use
    /// only global/shared memory and barriers. <c>auto</c> always allows it; an explicit
    /// <c>opencl</c> needs this flag, <c>--opencl-portable</c>, or the environment variable
    /// <c>GPUTRANSFORMER_OPENCL_PORTABLE=1</c>.
    /// </summary>
    public bool AllowPortableOpenCL { get; init; } =
        Environment.GetEnvironmentVariable(PortableOpenCLVariable) is "1" or "true" or "yes";

    /// <summary>Which device of the chosen backend (default: the first usable one).</summary>
    public int? DeviceIndex { get; init; }

    /// <summary>Kernel tile and group sizes; default: <see cref="KernelTuning.For"/> the chosen backend.</summary>
    public KernelTuning? Tuning { get; init; }

    /// <summary>Shape of the simulated CPU device: threads per warp, warps per multiprocessor, multiprocessors.</summary>
    public (int ThreadsPerWarp, int WarpsPerMultiprocessor, int Multiprocessors) CpuSimulator { get; init; } = (4, 16, 2);

    /// <summary>ILGPU optimisation level for kernels.</summary>
    public OptimizationLevel Optimization { get; init; } = OptimizationLevel.O2;

    /// <summary>
    /// Let the stream record device-side timestamps (ILGPU profiling markers: CUDA events, OpenCL
    /// profiling events), which the workload timer reads instead of the host clock. Off by
    /// default: OpenCL queues then record no profiling information.
    /// </summary>
    public bool Profiling { get; init; }
}

/// <summary>A kernel family: the compiled kernels of one file (Matmul, Attention, …) for one device.</summary>
/// <typeparam name="TSelf">The family type.</typeparam>
public interface IKernelFamily<out TSelf>
    where TSelf : class
{
    /// <summary>Compiles the family's kernels for <paramref name="device"/> (once; the device caches the family).</summary>
    static abstract TSelf Create(ComputeDevice device);

    /// <summary>
    /// Every kernel entry point the family loads under <paramref name="tuning"/>, generic
    /// instantiations included: the offline test compiles each to PTX and OpenCL C.
    /// </summary>
    static abstract IEnumerable<KernelEntry> EntryPoints(KernelTuning tuning);
}

/// <summary>A kernel method as a family loads it.</summary>
/// <param name="Method">The (instantiated) static kernel method.</param>
/// <param name="ExplicitlyGrouped">Launched with an explicit grid/group (LoadStreamKernel) rather than auto-grouped over an index.</param>
/// <param name="Specialization">
/// Launch bounds the family loads it with (PTX <c>.maxntid</c>/<c>.minnctapersm</c>, which cap
/// registers); <c>default</c> is none. The offline compiler uses the same, so the PTX it reads is
/// what a device runs.
/// </param>
public readonly record struct KernelEntry(System.Reflection.MethodInfo Method, bool ExplicitlyGrouped, KernelSpecialization Specialization = default)
{
    /// <summary>The entry for a kernel delegate; grouping follows ILGPU's convention (an index first parameter means auto-grouped).</summary>
    public static KernelEntry Of(Delegate kernel, KernelSpecialization specialization = default)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        var parameters = kernel.Method.GetParameters();
        var first = parameters.Length > 0 ? parameters[0].ParameterType : null;
        var implicitlyGrouped = first == typeof(Index1D) || first == typeof(Index2D) || first == typeof(Index3D)
            || first == typeof(LongIndex1D) || first == typeof(LongIndex2D) || first == typeof(LongIndex3D);
        return new KernelEntry(kernel.Method, !implicitlyGrouped, specialization);
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Method.DeclaringType?.Name}.{Method.Name}" +
        (Method.IsGenericMethod ? $"<{string.Join(", ", Method.GetGenericArguments().Select(a => a.Name))}>" : "");
}

/// <summary>
/// One accelerator and everything compiled for it. The single place where a backend is
/// chosen (<see cref="Create(string, DeviceOptions?)"/>); kernel families are compiled
/// once per device and cached (<see cref="Kernels{TFamily}"/>).
/// </summary>
public sealed class ComputeDevice : IDisposable
{
    /// <summary>The backend names the command line accepts.</summary>
    public static readonly IReadOnlyList<string> BackendNames = ["auto", "cuda", "opencl", "cpu"];

    /// <summary>The last error ILGPU threw while registering a backend's devices (MissingBackends reports it).</summary>
    private static readonly ConcurrentDictionary<Backend, string> RegistrationErrors = new();

    private readonly ConcurrentDictionary<Type, object> families = new();
    private readonly Context context;
    private bool disposed;

    private ComputeDevice(Context context, Accelerator accelerator, DeviceDescription description, KernelTuning tuning)
    {
        this.context = context;
        Accelerator = accelerator;
        Description = description;
        Tuning = tuning;
    }

    /// <summary>The ILGPU accelerator.</summary>
    public Accelerator Accelerator { get; }

    /// <summary>The device this accelerator runs on.</summary>
    public DeviceDescription Description { get; }

    /// <summary>The backend.</summary>
    public Backend Backend => Description.Backend;

    /// <summary>Tile and group sizes the kernels of this device use.</summary>
    public KernelTuning Tuning { get; }

    /// <summary>The stream kernels launch on.</summary>
    public AcceleratorStream Stream => Accelerator.DefaultStream;

    /// <summary>Whether <see cref="Stream"/> records profiling markers (<see cref="DeviceOptions.Profiling"/>).</summary>
    public bool Profiling => context.Properties.EnableProfiling;

    /// <summary>The kernel family <typeparamref name="TFamily"/> compiled for this device (created on first use, then cached).</summary>
    public TFamily Kernels<TFamily>()
        where TFamily : class, IKernelFamily<TFamily>
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        return (TFamily)families.GetOrAdd(typeof(TFamily), static (_, device) => TFamily.Create(device), this);
    }

    /// <summary>Waits for all launched work (a synchronization row when profiling).</summary>
    public void Synchronize()
    {
        using var profile = Profiler is { } p ? p.Enter(ProfileRowKind.Synchronize, "synchronize", "explicit", 0, 0) : default;
        Accelerator.Synchronize();
    }

    /// <summary>The profiler attached with <see cref="KernelProfiler.Attach"/>, or null (the default: profiling costs nothing).</summary>
    public KernelProfiler? Profiler { get; internal set; }

    /// <summary>
    /// A scope around one entry point's launches of kernel family <paramref name="family"/>, with
    /// the work it does (for GFLOP/s and GB/s), timed when a profiler is attached; else a no-op.
    /// </summary>
    public ProfileScope Profile(string family, string kernel, double flops = 0, double bytes = 0) =>
        Profiler is { } p ? p.Enter(ProfileRowKind.Kernel, family, kernel, flops, bytes) : default;

    /// <summary>A scope around host-side device work (<paramref name="kind"/>: upload, read-back, synchronization), timed when profiling.</summary>
    public ProfileScope ProfileHost(ProfileRowKind kind, string what, double bytes = 0) =>
        Profiler is { } p ? p.Enter(kind, kind.ToString().ToLowerInvariant(), what, 0, bytes) : default;

    /// <summary>Attributes launches to <paramref name="phase"/> until the scope ends (a no-op without a profiler).</summary>
    public ProfileLabelScope InPhase(ProfilePhase phase)
    {
        if (Profiler is not { } p)
            return default;
        var scope = new ProfileLabelScope(p, p.Phase, p.Layer);
        p.Phase = phase;
        return scope;
    }

    /// <summary>Attributes launches to layer <paramref name="name"/> (with <paramref name="index"/> appended when ≥ 0) until the scope ends (a no-op without a profiler).</summary>
    public ProfileLabelScope InLayer(string name, int index = -1)
    {
        if (Profiler is not { } p)
            return default;
        var scope = new ProfileLabelScope(p, p.Phase, p.Layer);
        p.Layer = index >= 0 ? $"{name}.{index}" : name;
        return scope;
    }

    /// <inheritdoc/>
    public override string ToString() => Description.ToString();

    /// <inheritdoc/>
    public void Dispose()
    {
        if (disposed)
            return;
        disposed = true;
        foreach (var family in families.Values)
            (family as IDisposable)?.Dispose();
        families.Clear();
        Accelerator.Dispose();
        context.Dispose();
    }

    /// <summary>The command-line spelling of <paramref name="backend"/>.</summary>
    public static string BackendName(Backend backend) => backend switch
    {
        Backend.Cpu => "cpu",
        Backend.OpenCL => "opencl",
        Backend.Cuda => "cuda",
        _ => throw new ArgumentOutOfRangeException(nameof(backend)),
    };

    /// <summary>Parses a backend name; <c>auto</c> gives null.</summary>
    /// <exception cref="ArgumentException">The name is not one of auto, cuda, opencl, cpu.</exception>
    public static Backend? ParseBackend(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return name.Trim().ToLowerInvariant() switch
        {
            "auto" or "" => null,
            "cuda" or "nvidia" => Backend.Cuda,
            "opencl" or "cl" => Backend.OpenCL,
            "cpu" or "simulator" => Backend.Cpu,
            _ => throw new ArgumentException(
                $"Unknown backend '{name}'. Known backends: {string.Join(", ", BackendNames)}.", nameof(name)),
        };
    }

    /// <summary>Every device ILGPU finds on this machine, usable or not.</summary>
    public static IReadOnlyList<DeviceDescription> ListDevices(DeviceOptions? options = null)
    {
        options ??= new DeviceOptions();
        using var context = CreateContext(options);
        return Describe(context);
    }

    /// <summary>
    /// Why each GPU backend without a device in <paramref name="found"/> (from <see cref="ListDevices"/>)
    /// has none: ILGPU hides driver errors while it enumerates, so this loads the driver library
    /// and asks the driver itself (CUDA: cuInit, cuDeviceGetCount; OpenCL: clGetPlatformIDs).
    /// The simulator is always there.
    /// </summary>
    public static IReadOnlyList<MissingBackend> MissingBackends(IReadOnlyList<DeviceDescription> found)
    {
        ArgumentNullException.ThrowIfNull(found);
        var missing = new List<MissingBackend>();
        foreach (var backend in new[] { Backend.Cuda, Backend.OpenCL })
        {
            if (!found.Any(d => d.Backend == backend))
                missing.Add(Explain(backend));
        }
        return missing;
    }

    /// <summary>
    /// Creates the device for <paramref name="backend"/>: <c>cuda</c>, <c>opencl</c>,
    /// <c>cpu</c>, or <c>auto</c> (a CUDA GPU, then an OpenCL GPU, then OpenCL on the CPU,
    /// then the CPU simulator).
    /// </summary>
    /// <exception cref="ArgumentException">Unknown backend name.</exception>
    /// <exception cref="InvalidOperationException">The backend has no usable device here; the message lists what was found.</exception>
    public static ComputeDevice Create(string backend = "auto", DeviceOptions? options = null) =>
        Create(ParseBackend(backend), options);

    /// <summary>Creates a device for <paramref name="backend"/> (null: auto).</summary>
    public static ComputeDevice Create(Backend? backend, DeviceOptions? options = null)
    {
        options ??= new DeviceOptions();
        var context = CreateContext(options);
        try
        {
            var found = Describe(context);
            var chosen = Choose(found, backend, options);
            var device = chosen.Backend switch
            {
                Backend.Cpu => (Device)context.GetCPUDevice(chosen.IndexInBackend),
                Backend.Cuda => context.GetCudaDevice(chosen.IndexInBackend),
                Backend.OpenCL => context.GetCLDevice(chosen.IndexInBackend),
                _ => throw new InvalidOperationException(),
            };
            if (device is CLDevice clDevice && chosen.NeedsPortableOptIn)
                ForceGenericAddressSpace(clDevice);
            var accelerator = device.CreateAccelerator(context);
            var tuning = options.Tuning ?? KernelTuning.For(chosen.Backend, chosen);
            return new ComputeDevice(context, accelerator, chosen, tuning);
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The device <see cref="Create(Backend?, DeviceOptions?)"/> would pick among <paramref name="found"/>
    /// (from <see cref="ListDevices"/>) for <paramref name="backend"/> (null: auto), without creating it.
    /// </summary>
    /// <exception cref="InvalidOperationException">No usable device; the message lists what was found.</exception>
    public static DeviceDescription Choose(IReadOnlyList<DeviceDescription> found, Backend? backend, DeviceOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(found);
        options ??= new DeviceOptions();
        string Listing() => found.Count == 0
            ? "no devices at all"
            : string.Join(Environment.NewLine, found.Select(d => "  " + d + (d.NeedsPortableOptIn ? "  [needs --opencl-portable]" : "")));

        if (backend is null)
        {
            // auto: fastest first. PoCL-like devices are fine here: auto only runs portable kernels on OpenCL.
            var order = found
                .Where(d => options.DeviceIndex is null || d.IndexInBackend == options.DeviceIndex)
                .OrderBy(d => (d.Backend, d.Kind) switch
                {
                    (Backend.Cuda, DeviceKind.Gpu) => 0,
                    (Backend.OpenCL, DeviceKind.Gpu) => 1,
                    (Backend.OpenCL, DeviceKind.Cpu) => 2,
                    (Backend.Cpu, _) => 4,
                    _ => 3,
                })
                .ThenByDescending(d => d.MemoryBytes);
            return order.FirstOrDefault()
                ?? throw new InvalidOperationException($"No device found for backend 'auto'. Found:{Environment.NewLine}{Listing()}");
        }

        var ofBackend = found.Where(d => d.Backend == backend).ToList();
        if (ofBackend.Count == 0)
        {
            var why = backend == Backend.Cpu ? "no CPU device" : Explain(backend.Value).Reason;
            throw new InvalidOperationException(
                $"Backend '{BackendName(backend.Value)}' is not available on this machine ({why}). Found:{Environment.NewLine}{Listing()}");
        }
        if (options.DeviceIndex is int index)
        {
            return ofBackend.FirstOrDefault(d => d.IndexInBackend == index)
                ?? throw new InvalidOperationException(
                    $"Backend '{BackendName(backend.Value)}' has no device {index}. Found:{Environment.NewLine}{Listing()}");
        }
        var usable = ofBackend.FirstOrDefault(d => !d.NeedsPortableOptIn) ??
            (options.AllowPortableOpenCL ? ofBackend[0] : null);
        return usable ?? throw new InvalidOperationException(
            $"OpenCL device '{ofBackend[0].Name}' lacks the generic address space that ILGPU requires. " +
            $"GpuTransformer's portable kernels run there anyway: pass --opencl-portable, set {DeviceOptions.PortableOpenCLVariable}=1, " +
            $"or use DeviceOptions.AllowPortableOpenCL. Found:{Environment.NewLine}{Listing()}");
    }

    private static Context CreateContext(DeviceOptions options)
    {
        NativeLibraries.EnsureResolverRegistered();
        var simulator = options.CpuSimulator;
        return Context.Create(builder =>
        {
            builder
                .Optimize(options.Optimization)
                .CPU(new CPUDevice(simulator.ThreadsPerWarp, simulator.WarpsPerMultiprocessor, simulator.Multiprocessors))
                .EnableAlgorithms()
                .EnableFusedMultiplyAdd();
            if (options.Profiling)
                builder.Profiling();
            TryAdd(Backend.Cuda, () => builder.Cuda());
            // All OpenCL devices, including those ILGPU's default filter drops; Choose() decides.
            TryAdd(Backend.OpenCL, () => builder.OpenCL(d => d.CLStdVersion >= ILGPU.Backends.OpenCL.CLCVersion.CL12));
        });
    }

    private static void TryAdd(Backend backend, Action register)
    {
        try
        {
            register();
            RegistrationErrors.TryRemove(backend, out _);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or TypeInitializationException or BadImageFormatException or CLException or CudaException)
        {
            // The backend is absent; MissingBackends says why, with this message.
            RegistrationErrors[backend] = $"{e.GetType().Name}: {e.Message}";
        }
    }

    /// <summary>Why <paramref name="backend"/> (CUDA or OpenCL) has no device: asks its driver directly.</summary>
    private static MissingBackend Explain(Backend backend)
    {
        var registration = RegistrationErrors.TryGetValue(backend, out var error) ? $"; ILGPU: {error}" : "";
        return backend switch
        {
            Backend.Cuda => ExplainCuda(registration),
            Backend.OpenCL => ExplainOpenCL(registration),
            _ => new MissingBackend(backend, "the CPU simulator is always present", DriverPresent: true),
        };
    }

    private static unsafe MissingBackend ExplainCuda(string registration)
    {
        if (!NativeLibraries.TryLoadDriver("cuda", out var driver, out var tried))
            return new MissingBackend(Backend.Cuda, $"no NVIDIA driver: {tried} not found{registration}", DriverPresent: false);
        if (!NativeLibrary.TryGetExport(driver, "cuInit", out var init) || !NativeLibrary.TryGetExport(driver, "cuDeviceGetCount", out var getCount))
            return new MissingBackend(Backend.Cuda, $"the NVIDIA driver library ({tried}) lacks cuInit/cuDeviceGetCount{registration}", DriverPresent: true);
        string Name(int code)
        {
            byte* name = null;
            return NativeLibrary.TryGetExport(driver, "cuGetErrorName", out var getName) &&
                ((delegate* unmanaged<int, byte**, int>)getName)(code, &name) == 0 && name is not null
                ? $"{Marshal.PtrToStringUTF8((IntPtr)name)} ({code})"
                : $"error {code}";
        }
        var result = ((delegate* unmanaged<uint, int>)init)(0);
        if (result != 0)
            return new MissingBackend(Backend.Cuda, $"the NVIDIA driver is installed but cuInit failed: {Name(result)}{registration}", DriverPresent: true);
        var count = 0;
        result = ((delegate* unmanaged<int*, int>)getCount)(&count);
        if (result != 0)
            return new MissingBackend(Backend.Cuda, $"the NVIDIA driver is installed but cuDeviceGetCount failed: {Name(result)}{registration}", DriverPresent: true);
        return new MissingBackend(
            Backend.Cuda,
            count == 0
                ? $"the NVIDIA driver is installed but reports no CUDA device{registration}"
                : $"the NVIDIA driver reports {count} CUDA device(s) but ILGPU registered none: an architecture ILGPU 1.5.3 does not know?{registration}",
            DriverPresent: true);
    }

    private static unsafe MissingBackend ExplainOpenCL(string registration)
    {
        const int PlatformNotFound = -1001; // CL_PLATFORM_NOT_FOUND_KHR: the ICD loader found no implementation
        const string Install = "on Debian: apt-get install pocl-opencl-icd for OpenCL on the CPU";
        if (!NativeLibraries.TryLoadDriver("OpenCL", out var loader, out var tried))
            return new MissingBackend(Backend.OpenCL, $"no OpenCL loader: {tried} not found; {Install}{registration}", DriverPresent: false);
        if (!NativeLibrary.TryGetExport(loader, "clGetPlatformIDs", out var getPlatforms))
            return new MissingBackend(Backend.OpenCL, $"the OpenCL loader ({tried}) lacks clGetPlatformIDs{registration}", DriverPresent: true);
        uint platforms = 0;
        var result = ((delegate* unmanaged<uint, IntPtr*, uint*, int>)getPlatforms)(0, null, &platforms);
        if (result == PlatformNotFound || (result == 0 && platforms == 0))
            return new MissingBackend(Backend.OpenCL, $"the OpenCL loader finds no platform (no ICD in /etc/OpenCL/vendors); {Install}{registration}", DriverPresent: false);
        if (result != 0)
            return new MissingBackend(Backend.OpenCL, $"clGetPlatformIDs failed with OpenCL error {result}{registration}", DriverPresent: true);
        return new MissingBackend(
            Backend.OpenCL,
            $"{platforms} OpenCL platform(s) installed but ILGPU registered no device: none there, or none with OpenCL C 1.2{registration}",
            DriverPresent: true);
    }

    private static List<DeviceDescription> Describe(Context context)
    {
        var result = new List<DeviceDescription>();
        foreach (var backend in new[] { Backend.Cuda, Backend.OpenCL, Backend.Cpu })
        {
            var index = 0;
            foreach (var device in context.Devices.Where(d => BackendOf(d) == backend))
                result.Add(Describe(device, backend, index++));
        }
        return result;
    }

    private static Backend? BackendOf(Device device) => device switch
    {
        CPUDevice => Backend.Cpu,
        CudaDevice => Backend.Cuda,
        CLDevice => Backend.OpenCL,
        _ => null,
    };

    private static DeviceDescription Describe(Device device, Backend backend, int index)
    {
        var features = new List<string>();
        var kind = DeviceKind.Other;
        var needsOptIn = false;
        switch (device)
        {
            case CPUDevice:
                kind = DeviceKind.Simulator;
                features.Add("simulator (correctness only)");
                break;
            case CudaDevice cuda:
                kind = DeviceKind.Gpu;
                features.Add($"sm_{(int)cuda.Architecture.GetValueOrDefault().Major}{cuda.Architecture.GetValueOrDefault().Minor}");
                features.Add("fp16");
                break;
            case CLDevice cl:
                kind = cl.DeviceType switch
                {
                    CLDeviceType.CL_DEVICE_TYPE_GPU => DeviceKind.Gpu,
                    CLDeviceType.CL_DEVICE_TYPE_CPU => DeviceKind.Cpu,
                    _ => DeviceKind.Other,
                };
                features.Add($"{cl.PlatformName}, OpenCL C {cl.CVersion}");
                if (cl.Capabilities.Float16)
                    features.Add("fp16");
                if (cl.Capabilities.Float64)
                    features.Add("fp64");
                if (cl.Capabilities.GenericAddressSpace)
                    features.Add("generic address space");
                else
                {
                    features.Add("no generic address space (portable kernels only)");
                    needsOptIn = true;
                }
                if (cl.Capabilities.SubGroups)
                    features.Add("sub-groups");
                break;
        }
        return new DeviceDescription(
            backend,
            index,
            device.Name.Trim(),
            kind,
            device.MemorySize,
            device.MaxNumThreadsPerGroup,
            device.WarpSize,
            device.NumMultiprocessors,
            device.MaxSharedMemoryPerGroup,
            string.Join(", ", features),
            needsOptIn);
    }

    /// <summary>
    /// ILGPU refuses OpenCL devices without the generic address space in the
    /// <c>CLAccelerator</c> constructor. Our portable kernels never rely on it (no atomics,
    /// no collectives, no shuffles), so the opt-in flips the capability flag before the
    /// accelerator is created.
    /// </summary>
    private static void ForceGenericAddressSpace(CLDevice device)
    {
        var property = typeof(CLCapabilityContext).GetProperty(
            nameof(CLCapabilityContext.GenericAddressSpace),
            BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic);
        var setter = property?.GetSetMethod(nonPublic: true)
            ?? throw new InvalidOperationException("This ILGPU version has no settable GenericAddressSpace capability; the portable OpenCL opt-in needs ILGPU 1.5.x.");
        setter.Invoke(device.Capabilities, [true]);
    }
}
