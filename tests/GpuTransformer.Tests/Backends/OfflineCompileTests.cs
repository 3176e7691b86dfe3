using Regex = System.Text.RegularExpressions.Regex;
using RegexOptions = System.Text.RegularExpressions.RegexOptions;
using GpuTransformer.Kernels.Compilation;
using Xunit.Sdk;

namespace GpuTransformer.Tests.Backends;

/// <summary>
/// Every kernel of every family compiles, with no GPU and no OpenCL driver, to PTX for
/// sm_80 and sm_90 and to OpenCL C 2.0/3.0, and portable kernels use nothing beyond global
/// and shared memory and barriers. Runs on any machine, so CUDA code generation is checked
/// in CI although CI has no GPU. <see cref="RuleBreakingKernels"/> are the negative
/// controls that show the checks can fail.
/// </summary>
public sealed class OfflineCompileTests(ITestOutputHelper output)
{
    // Elementwise alone lists 4; an empty or broken discovery falls below it.
    private const int MinimumKernels = 4;

    private static readonly Lazy<Compilation> Ours = new(() => Compilation.Of(OfflineCompiler.DiscoverKernels()));
    private static readonly Lazy<Compilation> RuleBreakers = new(() =>
        Compilation.Of(OfflineCompiler.DiscoverKernels(typeof(RuleBreakingKernels).Assembly)));

    [Fact]
    public void Discovery_finds_every_family_and_a_nontrivial_number_of_kernels()
    {
        var families = OfflineCompiler.FamilyTypes();
        Assert.Contains(typeof(ElementwiseKernels), families);
        Assert.DoesNotContain(typeof(RuleBreakingKernels), families);

        var kernels = Ours.Value.Kernels;
        Assert.True(kernels.Count >= MinimumKernels, $"Only {kernels.Count} kernel entry points discovered; expected at least {MinimumKernels}.");
        Assert.All(families, f => Assert.Contains(kernels, k => k.Family == f));
        Assert.All(kernels, k => Assert.True(k.Entry.Method.IsStatic, $"{k.Name} is not a static method."));
        Assert.All(kernels, k => Assert.False(k.Entry.Method.ContainsGenericParameters, $"{k.Name} is an open generic method: EntryPoints must list instantiations."));
        Assert.Equal(kernels.Count, kernels.Select(k => k.Entry.Method).Distinct().Count());
        foreach (var family in kernels.GroupBy(k => k.Family.Name))
        {
            output.WriteLine($"{family.Key}: {family.Count()} entry points ({family.Count(k => k.Portable)} portable)");
            foreach (var kernel in family)
                output.WriteLine($"  {kernel.Name}{(kernel.Entry.ExplicitlyGrouped ? "" : " (auto-grouped)")}: {string.Join(", ", kernel.Tunings)}");
        }
    }

    [Fact]
    public void Every_kernel_compiles_to_PTX_and_OpenCL_C()
    {
        var compilation = Ours.Value;
        output.WriteLine(compilation.Summary);
        Assert.Equal(compilation.Kernels.Count * OfflineTarget.Defaults.Count, compilation.Results.Count);
        var failures = FailureReport(compilation.Results);
        if (failures is not null)
            throw new XunitException(failures);
        Assert.All(compilation.Results, r => Assert.Contains(EntrySymbol(r), r.Code!, StringComparison.Ordinal));
    }

    [Fact]
    public void PTX_targets_the_requested_architecture_and_ISA()
    {
        // ILGPU 1.5.3 caps .target at sm_80 (the newest architecture one of its capabilities
        // needs): an sm_90 request still gets sm_80, which the driver JIT-compiles for Hopper.
        Assert.Equal("sm_80", ArchitectureName(OfflineTarget.PtxSm80.PtxTargetArchitecture!.Value));
        var ptx = Ours.Value.Succeeded(OfflineTargetKind.Ptx).ToList();
        Assert.Contains(ptx, r => r.Target == OfflineTarget.PtxSm80);
        Assert.Contains(ptx, r => r.Target == OfflineTarget.PtxSm90);
        foreach (var result in ptx)
        {
            var target = ArchitectureName(result.Target.PtxTargetArchitecture!.Value);
            var isa = result.Target.InstructionSet!.Value;
            Assert.True(Regex.IsMatch(result.Code!, $@"^\.target {target}\s*$", RegexOptions.Multiline),
                $"{result.Kernel.Name} → {result.Target.Name}: PTX has no '.target {target}' line.");
            Assert.True(Regex.IsMatch(result.Code!, $@"^\.version {isa.Major}\.{isa.Minor}\s*$", RegexOptions.Multiline),
                $"{result.Kernel.Name} → {result.Target.Name}: PTX has no '.version {isa.Major}.{isa.Minor}' line.");
            Assert.Contains(".address_size 64", result.Code!, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Matmul_inner_products_are_fused_multiply_adds_on_both_targets()
    {
        // FusedMath.MultiplyAdd is an intrinsic with a code generator per backend: without one
        // the OpenCL C had a·b and + c as two statements (PoCL then ran vmulps + vaddps), or a
        // call to a function of its own.
        // (PoCL's TN instantiation is unfused on purpose: Reg1Unfused.)
        var tiled = Ours.Value.Results.Where(r => r.Succeeded && r.Kernel.Family == typeof(MatmulKernels) &&
            r.Kernel.Entry.Method.Name.StartsWith("TiledKernel", StringComparison.Ordinal) &&
            !r.Kernel.Entry.Method.GetGenericArguments().Any(Unfused)).ToList();
        Assert.NotEmpty(tiled);
        foreach (var result in tiled)
        {
            var fused = result.Target.Kind == OfflineTargetKind.Ptx ? "fma.rn.f32" : "fma (";
            Assert.True(result.Code!.Contains(fused, StringComparison.Ordinal), $"{result.Kernel.Name} → {result.Target.Name}: no '{fused}'.");
            // ILGPU still emits an unused stub of the intrinsic's function; nothing may call it.
            var calls = result.Code!.Split('\n').Where(l => l.Contains("MultiplyAdd", StringComparison.Ordinal) &&
                (l.Contains("call", StringComparison.Ordinal) || l.Contains('='))).ToList();
            Assert.True(calls.Count == 0, $"{result.Kernel.Name} → {result.Target.Name} calls MultiplyAdd: {calls.FirstOrDefault()}");
        }
    }

    [Fact]
    public void Portable_kernels_use_no_atomics_shuffles_or_collectives()
    {
        var portable = Ours.Value.Results.Where(r => r.Succeeded && r.Kernel.Portable).ToList();
        Assert.True(portable.Count >= MinimumKernels * OfflineTarget.Defaults.Count, $"Only {portable.Count} portable compilations to scan.");
        var violations = PortabilityReport(portable);
        if (violations is not null)
            throw new XunitException(violations);
    }

    [Fact]
    public void Negative_controls_a_kernel_that_does_not_compile_is_reported_by_name_with_the_compiler_message()
    {
        var broken = RuleBreakers.Value.Results.Where(r => r.Kernel.Entry.Method.Name == nameof(RuleBreakingKernels.ManagedAllocationKernel)).ToList();
        Assert.Equal(OfflineTarget.Defaults.Count, broken.Count);
        Assert.All(broken, r => Assert.False(r.Succeeded, $"{r.Target.Name} compiled a kernel that allocates a managed object."));

        var report = FailureReport(RuleBreakers.Value.Results);
        Assert.NotNull(report);
        output.WriteLine(report);
        foreach (var result in broken)
        {
            // The compiler's own reason, on every target (not just ILGPU's generic wrapper).
            Assert.Contains("Class type 'System.Collections.Generic.List`1[System.Int32]' is not supported", result.Error!, StringComparison.Ordinal);
            Assert.Contains($"RuleBreakingKernels.ManagedAllocationKernel (RuleBreakingKernels) → {result.Target.Name}: {result.Error}", report, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Negative_controls_atomics_and_shuffles_are_flagged_and_barriers_are_not()
    {
        var results = RuleBreakers.Value.Results;
        OfflineResult Result(string kernel, OfflineTarget target) =>
            results.Single(r => r.Kernel.Entry.Method.Name == kernel && r.Target == target);

        var report = PortabilityReport(results) ?? "";
        output.WriteLine(report);
        foreach (var target in OfflineTarget.Defaults)
        {
            var atomic = Result(nameof(RuleBreakingKernels.AtomicKernel), target);
            Assert.True(atomic.Succeeded, atomic.Error);
            Assert.NotEmpty(OfflineCompiler.NonPortableLines(atomic));
            Assert.Contains($"RuleBreakingKernels.AtomicKernel → {target.Name}: ", report, StringComparison.Ordinal);

            // The positive control: shared memory and Group.Barrier (work_group_barrier in OpenCL C, bar.sync in PTX) are portable.
            var barrier = Result(nameof(RuleBreakingKernels.SharedMemoryBarrierKernel), target);
            Assert.True(barrier.Succeeded, barrier.Error);
            Assert.Empty(OfflineCompiler.NonPortableLines(barrier));
            Assert.Contains(target.Kind == OfflineTargetKind.Ptx ? "bar.sync" : "work_group_barrier", barrier.Code!, StringComparison.Ordinal);
        }
        foreach (var target in OfflineTarget.Defaults.Where(t => t.Kind == OfflineTargetKind.Ptx))
            Assert.Contains(OfflineCompiler.NonPortableLines(Result(nameof(RuleBreakingKernels.ShuffleKernel), target)), line => line.StartsWith("shfl.", StringComparison.Ordinal));
        // ILGPU implements OpenCL shuffles for Intel devices only: for any other vendor the shuffle does not compile at all.
        foreach (var target in OfflineTarget.Defaults.Where(t => t.Kind == OfflineTargetKind.OpenCL))
        {
            var shuffle = Result(nameof(RuleBreakingKernels.ShuffleKernel), target);
            Assert.True(!shuffle.Succeeded || OfflineCompiler.NonPortableLines(shuffle).Count > 0, $"{target.Name}: a shuffle passed as portable.");
        }
    }

    /// <summary>Null when everything compiled; otherwise one line per failure: kernel, family, target, compiler message.</summary>
    private static bool Unfused(Type type) =>
        type == typeof(Reg1Unfused) || (type.IsGenericType && type.GetGenericArguments().Any(Unfused));

    private static string? FailureReport(IEnumerable<OfflineResult> results)
    {
        var failures = results.Where(r => !r.Succeeded).ToList();
        return failures.Count == 0
            ? null
            : $"{failures.Count} offline compilation(s) failed:{Environment.NewLine}" +
              string.Join(Environment.NewLine, failures.Select(f => $"  {f.Kernel.Name} ({f.Kernel.Family.Name}) → {f.Target.Name}: {f.Error}"));
    }

    /// <summary>Null when no portable kernel breaks the rule; otherwise one line per offending instruction.</summary>
    private static string? PortabilityReport(IEnumerable<OfflineResult> results)
    {
        var violations = results
            .Where(r => r.Kernel.Portable)
            .SelectMany(r => OfflineCompiler.NonPortableLines(r).Select(line => $"  {r.Kernel.Name} → {r.Target.Name}: '{line}'"))
            .ToList();
        return violations.Count == 0
            ? null
            : "Portable kernels (listed for the simulator or OpenCL) must use only global/shared memory and barriers: no atomics, " +
              $"shuffles or group/warp collectives:{Environment.NewLine}{string.Join(Environment.NewLine, violations.Take(60))}";
    }

    /// <summary>ILGPU names an entry point <c>Kernel_</c> + the .NET method name in both backends.</summary>
    private static string EntrySymbol(OfflineResult result) =>
        (result.Target.Kind == OfflineTargetKind.Ptx ? ".entry " : "kernel void ") + "Kernel_" + result.Kernel.Entry.Method.Name + "(";

    private static string ArchitectureName(ILGPU.Runtime.Cuda.CudaArchitecture architecture) =>
        $"sm_{architecture.Major}{architecture.Minor}";

    private sealed record Compilation(IReadOnlyList<OfflineKernel> Kernels, IReadOnlyList<OfflineResult> Results, TimeSpan Elapsed)
    {
        public static Compilation Of(IReadOnlyList<OfflineKernel> kernels)
        {
            var clock = Stopwatch.StartNew();
            using var compiler = new OfflineCompiler();
            var results = compiler.CompileAll(kernels);
            return new Compilation(kernels, results, clock.Elapsed);
        }

        public string Summary =>
            $"{Results.Count} compilations of {Kernels.Count} kernels in {Elapsed.TotalSeconds:F1} s; slowest: " +
            string.Join(", ", Results.OrderByDescending(r => r.Elapsed).Take(3).Select(r => $"{r.Kernel.Name}→{r.Target.Name} {r.Elapsed.TotalMilliseconds:F0} ms"));

        public IEnumerable<OfflineResult> Succeeded(OfflineTargetKind kind) => Results.Where(r => r.Succeeded && r.Target.Kind == kind);
    }
}

/// <summary>
/// A kernel family that breaks the portability rules on purpose (negative controls for
/// <see cref="OfflineCompileTests"/>). It lives in the test assembly, so the real
/// discovery never sees it; it is never loaded on a device.
/// </summary>
internal sealed class RuleBreakingKernels : IKernelFamily<RuleBreakingKernels>
{
    public static RuleBreakingKernels Create(ComputeDevice device) =>
        throw new NotSupportedException("Negative controls for the offline compile test; never loaded.");

    public static IEnumerable<KernelEntry> EntryPoints(KernelTuning tuning) =>
    [
        KernelEntry.Of(AtomicKernel),
        KernelEntry.Of(ShuffleKernel),
        KernelEntry.Of(ManagedAllocationKernel),
        KernelEntry.Of(SharedMemoryBarrierKernel),
    ];

    public static void AtomicKernel(Index1D i, ArrayView<float> sum, ArrayView<float> values) =>
        Atomic.Add(ref sum[0], values[i]);

    public static void ShuffleKernel(ArrayView<float> values)
    {
        var i = Grid.GlobalIndex.X;
        values[i] = Warp.Shuffle(values[i], 0);
    }

    public static void ManagedAllocationKernel(Index1D i, ArrayView<int> values)
    {
        var list = new List<int> { i };
        values[i] = list.Count;
    }

    public static void SharedMemoryBarrierKernel(ArrayView<float> values)
    {
        var scratch = SharedMemory.Allocate<float>(32);
        scratch[Group.IdxX] = values[Grid.GlobalIndex.X];
        Group.Barrier();
        values[Grid.GlobalIndex.X] = scratch[Group.DimX - 1 - Group.IdxX];
    }
}
