using System.Reflection;
using System.Text;
using System.Text.RegularExpressions;
using ILGPU;
using ILGPU.Backends;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.OpenCL;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime.OpenCL;
using GpuTransformer.Kernels.Backends;
using Backend = GpuTransformer.Kernels.Backends.Backend;
using IlgpuBackend = ILGPU.Backends.Backend;

namespace GpuTransformer.Kernels.Compilation;

/// <summary>What an offline compile produces: PTX assembly or OpenCL C source.</summary>
public enum OfflineTargetKind
{
    /// <summary>PTX for a CUDA architecture (ILGPU's <see cref="PTXBackend"/>, no NVVM).</summary>
    Ptx,

    /// <summary>OpenCL C source (ILGPU's <see cref="CLBackend"/>).</summary>
    OpenCL,
}

/// <summary>One code generation target for <see cref="OfflineCompiler"/>.</summary>
/// <param name="Name">Short name for messages, e.g. <c>ptx-sm_80</c>.</param>
/// <param name="Kind">PTX or OpenCL C.</param>
/// <param name="Architecture">CUDA architecture whose capabilities the PTX backend assumes (PTX only).</param>
/// <param name="InstructionSet">PTX ISA written into <c>.version</c> (PTX only).</param>
/// <param name="CVersion">OpenCL C version the source is written for (OpenCL only).</param>
public sealed record OfflineTarget(
    string Name,
    OfflineTargetKind Kind,
    CudaArchitecture? Architecture = null,
    CudaInstructionSet? InstructionSet = null,
    CLCVersion? CVersion = null)
{
    /// <summary>
    /// Ampere with PTX ISA 7.0, the oldest ISA that knows sm_80: a kernel that needs a newer
    /// ISA fails here rather than on an old driver.
    /// </summary>
    public static OfflineTarget PtxSm80 { get; } = Ptx(CudaArchitecture.SM_80, CudaInstructionSet.ISA_70);

    /// <summary>
    /// Hopper (H100/H200) with PTX ISA 8.8, what ILGPU picks there with a CUDA 12.9+ driver.
    /// ILGPU still writes <c>.target sm_80</c> for it (it caps the target at the newest
    /// architecture one of its capabilities needs); the driver JIT-compiles that for sm_90.
    /// </summary>
    public static OfflineTarget PtxSm90 { get; } = Ptx(CudaArchitecture.SM_90, CudaInstructionSet.ISA_88);

    /// <summary>OpenCL C 2.0 (ILGPU's minimum) with the generic address space and fp64, no fp16, no sub-groups.</summary>
    public static OfflineTarget OpenCL20 { get; } = OpenCL(CLCVersion.CL20);

    /// <summary>OpenCL C 3.0 claiming the generic address space: what the portable opt-in gives PoCL.</summary>
    public static OfflineTarget OpenCL30 { get; } = OpenCL(CLCVersion.CL30);

    /// <summary>The targets every kernel must compile for: sm_80, sm_90, OpenCL C 2.0 and 3.0.</summary>
    public static IReadOnlyList<OfflineTarget> Defaults { get; } = [PtxSm80, PtxSm90, OpenCL20, OpenCL30];

    /// <summary>A PTX target.</summary>
    public static OfflineTarget Ptx(CudaArchitecture architecture, CudaInstructionSet instructionSet) =>
        new($"ptx-sm_{architecture.Major}{architecture.Minor}", OfflineTargetKind.Ptx, architecture, instructionSet);

    /// <summary>An OpenCL C target.</summary>
    public static OfflineTarget OpenCL(CLCVersion version) =>
        new($"opencl-c{version.Major}.{version.Minor}", OfflineTargetKind.OpenCL, CVersion: version);

    /// <summary>
    /// The architecture written after <c>.target</c> for a PTX target: ILGPU's
    /// <see cref="CudaCapabilityContext.TargetArchitecture"/>, i.e. the requested
    /// architecture capped at the newest one its capabilities need (sm_80 in 1.5.3).
    /// </summary>
    public CudaArchitecture? PtxTargetArchitecture =>
        Kind == OfflineTargetKind.Ptx ? new CudaCapabilityContext(Architecture!.Value).TargetArchitecture : null;

    public override string ToString() => Name;
}

/// <summary>A kernel entry point found by <see cref="OfflineCompiler.DiscoverKernels"/>.</summary>
/// <param name="Family">The kernel family type that lists it.</param>
/// <param name="Entry">The (instantiated) kernel method and how it is launched.</param>
/// <param name="Tunings">Names of the representative devices whose tuning lists it.</param>
/// <param name="Portable">
/// Listed by a non-CUDA tuning, so it runs on the simulator and PoCL and must use only
/// global/shared memory and barriers. Kernels only the CUDA tuning lists may use CUDA-only
/// features (shuffles, atomics, inline PTX).
/// </param>
public sealed record OfflineKernel(Type Family, KernelEntry Entry, IReadOnlyList<string> Tunings, bool Portable)
{
    /// <summary>Family and method, with type arguments, e.g. <c>Matmul.TiledKernel&lt;Tile64x64&gt;</c>.</summary>
    public string Name => Entry.ToString();

    public override string ToString() => Name;
}

/// <summary>The outcome of compiling one kernel for one target.</summary>
/// <param name="Kernel">The kernel.</param>
/// <param name="Target">The target.</param>
/// <param name="Code">PTX assembly or OpenCL C source; null when compilation failed.</param>
/// <param name="Error">The compiler's message, inner exceptions included; null on success.</param>
/// <param name="Elapsed">Time spent compiling.</param>
public sealed record OfflineResult(OfflineKernel Kernel, OfflineTarget Target, string? Code, string? Error, TimeSpan Elapsed)
{
    /// <summary>Whether code was generated.</summary>
    public bool Succeeded => Code is not null;

    public override string ToString() =>
        $"{Kernel.Name} → {Target.Name}: {(Succeeded ? $"ok, {Code!.Length} chars" : "FAILED: " + Error)}";
}

/// <summary>
/// Compiles kernels to PTX and OpenCL C with no GPU and no OpenCL driver, through ILGPU's
/// backends directly (the same code generators an accelerator uses at load time). The
/// offline test compiles every kernel of every family for <see cref="OfflineTarget.Defaults"/>;
/// the CLI and benchmarks use it to dump the generated code.
/// </summary>
public sealed partial class OfflineCompiler : IDisposable
{
    private readonly OptimizationLevel optimization;
    private readonly Dictionary<OfflineTarget, (Context Context, IlgpuBackend Backend)> backends = [];
    private bool disposed;

    /// <summary>A compiler with the optimisation level kernels are loaded with (default: <see cref="DeviceOptions.Optimization"/>).</summary>
    public OfflineCompiler(OptimizationLevel optimization = OptimizationLevel.O2)
    {
        this.optimization = optimization;
    }

    /// <summary>
    /// Representative devices, one per tuning branch of <see cref="KernelTuning.For"/>:
    /// the simulator as <see cref="DeviceOptions.CpuSimulator"/> configures it, PoCL on a
    /// CPU, an OpenCL GPU and an NVIDIA GPU (H100-like).
    /// </summary>
    public static IReadOnlyList<DeviceDescription> RepresentativeDevices { get; } =
    [
        new(Backend.Cpu, 0, "CPU simulator", DeviceKind.Simulator, 1L << 30, 64, 4, 2, 1 << 16, "offline", false),
        new(Backend.OpenCL, 0, "OpenCL CPU (PoCL)", DeviceKind.Cpu, 8L << 30, 4096, 8, 2, 1 << 16, "offline", true),
        new(Backend.OpenCL, 1, "OpenCL GPU", DeviceKind.Gpu, 16L << 30, 256, 32, 32, 1 << 16, "offline", false),
        new(Backend.Cuda, 0, "CUDA GPU (sm_90)", DeviceKind.Gpu, 80L << 30, 1024, 32, 132, 48 << 10, "offline", false),
    ];

    /// <summary>Every non-abstract type in <paramref name="assembly"/> (default: GpuTransformer.Kernels) that implements <see cref="IKernelFamily{TSelf}"/>.</summary>
    public static IReadOnlyList<Type> FamilyTypes(Assembly? assembly = null)
    {
        assembly ??= typeof(IKernelFamily<>).Assembly;
        return assembly.GetTypes()
            .Where(t => t is { IsAbstract: false, IsInterface: false, IsGenericTypeDefinition: false }
                && t.GetInterfaces().Any(i => i.IsGenericType && i.GetGenericTypeDefinition() == typeof(IKernelFamily<>)))
            .OrderBy(t => t.FullName, StringComparer.Ordinal)
            .ToList();
    }

    /// <summary>
    /// The entry points of <paramref name="family"/> under <paramref name="tuning"/>, from
    /// its static <c>EntryPoints</c> (an interface static member, so reached by reflection).
    /// </summary>
    public static IReadOnlyList<KernelEntry> EntryPoints(Type family, KernelTuning tuning)
    {
        ArgumentNullException.ThrowIfNull(family);
        ArgumentNullException.ThrowIfNull(tuning);
        var method = family.GetMethod(
            nameof(IKernelFamily<object>.EntryPoints),
            BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static,
            [typeof(KernelTuning)])
            ?? throw new InvalidOperationException($"Kernel family {family.Name} has no static EntryPoints(KernelTuning).");
        try
        {
            var entries = (IEnumerable<KernelEntry>?)method.Invoke(null, [tuning])
                ?? throw new InvalidOperationException($"{family.Name}.EntryPoints returned null.");
            return entries.ToList();
        }
        catch (TargetInvocationException e) when (e.InnerException is not null)
        {
            throw new InvalidOperationException($"{family.Name}.EntryPoints({tuning}) threw: {e.InnerException.Message}", e.InnerException);
        }
    }

    /// <summary>
    /// Every kernel entry point of every family, under the tuning of each of
    /// <paramref name="devices"/> (default: <see cref="RepresentativeDevices"/>),
    /// deduplicated by method (generic instantiation included).
    /// </summary>
    public static IReadOnlyList<OfflineKernel> DiscoverKernels(Assembly? assembly = null, IEnumerable<DeviceDescription>? devices = null)
    {
        var kernels = new Dictionary<MethodInfo, (Type Family, KernelEntry Entry, List<string> Tunings, bool Portable)>();
        foreach (var family in FamilyTypes(assembly))
        {
            foreach (var device in devices ?? RepresentativeDevices)
            {
                var tuning = KernelTuning.For(device.Backend, device);
                foreach (var entry in EntryPoints(family, tuning))
                {
                    if (!kernels.TryGetValue(entry.Method, out var found))
                    {
                        found = (family, entry, [], false);
                    }
                    else if (found.Entry.ExplicitlyGrouped != entry.ExplicitlyGrouped)
                    {
                        throw new InvalidOperationException(
                            $"{entry} is listed both as explicitly and as implicitly grouped by {family.Name}.");
                    }
                    if (!found.Tunings.Contains(device.Name))
                        found.Tunings.Add(device.Name);
                    kernels[entry.Method] = found with { Portable = found.Portable || device.Backend != Backend.Cuda };
                }
            }
        }
        return kernels.Values
            .Select(k => new OfflineKernel(k.Family, k.Entry, k.Tunings, k.Portable))
            .OrderBy(k => k.Family.Name, StringComparer.Ordinal)
            .ThenBy(k => k.Name, StringComparer.Ordinal)
            .ToList();
    }

    /// <summary>Compiles <paramref name="kernel"/> for <paramref name="target"/>; a compiler error is returned, not thrown.</summary>
    public OfflineResult Compile(OfflineKernel kernel, OfflineTarget target)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        ArgumentNullException.ThrowIfNull(target);
        ObjectDisposedException.ThrowIf(disposed, this);
        var backend = BackendFor(target);
        var entry = kernel.Entry.ExplicitlyGrouped
            ? EntryPointDescription.FromExplicitlyGroupedKernel(kernel.Entry.Method)
            : EntryPointDescription.FromImplicitlyGroupedKernel(kernel.Entry.Method);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        try
        {
            // The launch bounds the family loads the kernel with (empty for most).
            var compiled = backend.Compile(entry, kernel.Entry.Specialization);
            var code = compiled switch
            {
                PTXCompiledKernel ptx => ptx.PTXAssembly,
                CLCompiledKernel cl => cl.Source,
                _ => throw new InvalidOperationException($"Unexpected compiled kernel {compiled.GetType().Name}."),
            };
            return new OfflineResult(kernel, target, code, null, clock.Elapsed);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // A failed compile can leave ILGPU's context in a state where later kernels fail
            // with unrelated errors: the next kernel for this target gets a fresh one.
            Forget(target);
            return new OfflineResult(kernel, target, null, Describe(e), clock.Elapsed);
        }
    }

    /// <summary>Compiles every kernel for every target (default: <see cref="OfflineTarget.Defaults"/>).</summary>
    public IReadOnlyList<OfflineResult> CompileAll(IEnumerable<OfflineKernel> kernels, IEnumerable<OfflineTarget>? targets = null)
    {
        ArgumentNullException.ThrowIfNull(kernels);
        var targetList = (targets ?? OfflineTarget.Defaults).ToList();
        return kernels.SelectMany(k => targetList.Select(t => Compile(k, t))).ToList();
    }

    /// <summary>
    /// Lines of generated code that break the portability rule (global/shared memory and
    /// barriers only): PTX atomics (<c>atom.</c>, <c>red.</c>), shuffles and other warp
    /// collectives (<c>shfl.</c>, <c>vote.</c>, <c>match.</c>, <c>redux.</c>); OpenCL
    /// <c>atomic_*</c>, <c>atom_*</c>, <c>work_group_*</c> (except <c>work_group_barrier</c>,
    /// which is <c>Group.Barrier()</c>) and <c>sub_group_*</c> calls.
    /// Empty for a failed compilation.
    /// </summary>
    public static IReadOnlyList<string> NonPortableLines(OfflineResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        if (result.Code is null)
            return [];
        var pattern = result.Target.Kind == OfflineTargetKind.Ptx ? NonPortablePtx() : NonPortableOpenCL();
        return pattern.Matches(result.Code).Select(m => LineAround(result.Code, m.Index)).Distinct().ToList();
    }

    public void Dispose()
    {
        if (disposed)
            return;
        disposed = true;
        foreach (var (context, backend) in backends.Values)
        {
            backend.Dispose();
            context.Dispose();
        }
        backends.Clear();
    }

    private void Forget(OfflineTarget target)
    {
        if (backends.Remove(target, out var found))
        {
            found.Backend.Dispose();
            found.Context.Dispose();
        }
    }

    private IlgpuBackend BackendFor(OfflineTarget target)
    {
        if (!backends.TryGetValue(target, out var found))
        {
            // One context per target, no devices: code generation needs only the IR context and
            // the Algorithms intrinsics. A shared context would cache a kernel's failed frontend
            // compile, and later targets would report only "internal compiler error".
            var context = Context.Create(builder => builder.Optimize(optimization).EnableAlgorithms().EnableFusedMultiplyAdd());
            IlgpuBackend backend = target.Kind switch
            {
                OfflineTargetKind.Ptx => new PTXBackend(
                    context,
                    new CudaCapabilityContext(target.Architecture ?? throw new ArgumentException($"{target} has no architecture.", nameof(target))),
                    target.Architecture.Value,
                    target.InstructionSet ?? throw new ArgumentException($"{target} has no instruction set.", nameof(target)),
                    nvvmAPI: null),
                // The capabilities our portable kernels may assume on any OpenCL device we run
                // on, PoCL with the opt-in included: generic address space and fp64 only.
                OfflineTargetKind.OpenCL => new CLBackend(
                    context,
                    new CLCapabilityContext(
                        float16: false,
                        float64: true,
                        genericAddressSpace: true,
                        int64_Atomics: false,
                        subGroups: false),
                    CLDeviceVendor.Other,
                    target.CVersion ?? throw new ArgumentException($"{target} has no OpenCL C version.", nameof(target))),
                _ => throw new ArgumentOutOfRangeException(nameof(target)),
            };
            found = (context, backend);
            backends[target] = found;
        }
        return found.Backend;
    }

    private static string LineAround(string code, int index)
    {
        var start = index == 0 ? 0 : code.LastIndexOf('\n', index - 1) + 1;
        var end = code.IndexOf('\n', index);
        return code[start..(end < 0 ? code.Length : end)].Trim();
    }

    // Instructions only, not comments: a PTX instruction line is whitespace, an optional
    // predicate and the opcode.
    [GeneratedRegex(@"^[ \t]*(@!?%p\d+[ \t]+)?(atom|red|shfl|vote|match|redux)\.", RegexOptions.Multiline)]
    private static partial Regex NonPortablePtx();

    // work_group_barrier is Group.Barrier() itself; every other work_group_* is a collective.
    // get_sub_group_* (Warp.WarpSize, LaneIdx) needs cl_khr_subgroups, which PoCL lacks.
    [GeneratedRegex(@"\b(atomic_\w+|atom_\w+|work_group_(?!barrier\b)\w+|(get_|intel_)?sub_group_\w+)\s*\(")]
    private static partial Regex NonPortableOpenCL();

    private static string Describe(Exception exception)
    {
        var text = new StringBuilder();
        for (var e = exception; e is not null; e = e.InnerException)
        {
            if (text.Length > 0)
                text.Append(" ---> ");
            text.Append(e.GetType().Name).Append(": ").Append(e.Message);
        }
        return text.ToString();
    }
}
