using GpuTransformer.Kernels.Compilation;

namespace GpuTransformer.Tests.Backends;

/// <summary>
/// What the CUDA kernels compile to, read from ILGPU's PTX with no GPU through the same reader
/// as the bench app's <c>ptx</c> command (<see cref="PtxStatistics"/>): the hot kernels keep
/// their values in registers (no local memory), and the matmul and attention products read
/// shared memory 128 bits at a time with at least 4 multiply-adds per load. The parser is
/// checked on a fixed PTX text and on kernels that break each rule (negative controls).
/// </summary>
public sealed class PtxReportTests(ITestOutputHelper output)
{
    private static readonly Lazy<PtxReport> Cuda = new(() => PtxReport.Create("cuda", OfflineTarget.PtxSm90));

    // The kernels the CUDA tuning runs in a training step's inner loops (family, method name prefix).
    private static readonly (string Family, string Method)[] HotKernels =
    [
        ("MatmulKernels", "WarpTiledKernel"),
        ("AttentionKernels", "RegisterForwardKernel"),
        ("AttentionKernels", "RegisterKeyValueGradientKernel"),
        ("AttentionKernels", "RegisterQueryGradientKernel"),
        ("SoftmaxKernels", ""),
        ("LayerNormKernels", ""),
        ("CrossEntropyKernels", ""),
    ];

    // Of those, the products whose inner loops must read shared memory 128 bits at a time.
    private static readonly (string Family, string Method)[] Products = HotKernels.Take(4).ToArray();

    private const double MinimumMultiplyAddsPerSharedLoad = 4;

    [Fact]
    public void Every_CUDA_kernel_compiles_and_fits_48_KB_of_static_shared_memory()
    {
        var report = Cuda.Value;
        output.WriteLine(report.ToMarkdown());
        Assert.All(report.Kernels, k => Assert.True(k.Statistics is not null, $"{k.Name}: {k.Error}"));
        Assert.All(report.Kernels, k => Assert.InRange(k.Statistics!.SharedBytes, 0, 48 * 1024));
        Assert.Equal(report.Kernels.Count, report.Kernels.Select(k => k.FileName).Distinct().Count());
        Assert.All(report.Kernels, k => Assert.Matches("^[A-Za-z0-9._-]+$", k.FileName));
    }

    [Fact]
    public void Hot_CUDA_kernels_use_no_local_memory()
    {
        foreach (var (family, method) in HotKernels)
        {
            var kernels = Select(family, method);
            foreach (var kernel in kernels)
            {
                var s = kernel.Statistics!;
                Assert.True(s.LocalBytes == 0 && s.Kernel.LocalLoads == 0 && s.Kernel.LocalStores == 0,
                    $"{kernel.Name} uses local memory: {s.LocalBytes} B, {s.Kernel.LocalLoads} ld.local, {s.Kernel.LocalStores} st.local.");
            }
        }
    }

    [Fact]
    public void Matmul_and_attention_inner_loops_read_shared_memory_128_bits_at_a_time()
    {
        foreach (var (family, method) in Products)
        {
            foreach (var kernel in Select(family, method))
            {
                var hot = kernel.Statistics!.HotLoop;
                Assert.True(hot is not null, $"{kernel.Name}: no loop with multiply-adds found.");
                var loop = hot!.Value;
                output.WriteLine($"{kernel.Name}: hot loop ld.shared {loop.SharedLoads}, {loop.MultiplyAdds} multiply-adds, {loop.MultiplyAddsPerSharedLoad:F2} per load");
                Assert.True(loop.SharedLoads.V4 > 0 && loop.SharedLoads.V2 == 0 && loop.SharedLoads.Scalar == 0,
                    $"{kernel.Name}: the hot loop's shared loads are {loop.SharedLoads} (v4/v2/scalar); expected only 128-bit loads.");
                Assert.True(loop.MultiplyAddsPerSharedLoad >= MinimumMultiplyAddsPerSharedLoad,
                    $"{kernel.Name}: {loop.MultiplyAddsPerSharedLoad:F2} multiply-adds per shared load in the hot loop; expected ≥ {MinimumMultiplyAddsPerSharedLoad}.");
            }
        }
    }

    [Fact]
    public void The_matmul_is_capped_at_256_threads_and_two_groups_per_multiprocessor()
    {
        Assert.All(Select("MatmulKernels", "WarpTiledKernel"), k =>
        {
            Assert.Equal(256, k.Statistics!.MaxThreads);
            Assert.Equal(2, k.Statistics!.MinGroupsPerMultiprocessor);
        });
    }

    [Fact]
    public void The_parser_counts_a_known_PTX_text()
    {
        const string ptx = """
            .visible .entry Kernel_Sample(
                .param .u64 _a
            )
            {
                .local .align 4 .b8 __local_depot0[64];
                .shared .align 16 .b8 __shared_alloca0[4096];
                .shared .align 4 .b8 __shared_alloca1[256];
                .reg .f32 %f<20>;
                st.local.f32 [%rd1], %f1;
                ld.local.f32 %f2, [%rd1];
                ld.global.nc.v4.f32 {%f1, %f2, %f3, %f4}, [%rd2];
                ld.global.f32 %f5, [%rd2];
            L_1:
                ld.shared.v4.f32 {%f6, %f7, %f8, %f9}, [%rd3];
                ld.shared.v2.f32 {%f10, %f11}, [%rd3+16];
                mul.f32 %f12, %f6, %f10;
                add.f32 %f13, %f13, %f12;
                mul.f32 %f14, %f7, %f11;
                add.f32 %f15, %f14, %f14;
                fma.rn.f32 %f16, %f8, %f9, %f16;
                @%p1 bra L_1;
                bar.sync 0;
                st.shared.f32 [%rd3], %f13;
                st.global.v4.f32 [%rd4], {%f13, %f15, %f16, %f16};
                ret;
            }
            """;
        var s = PtxStatistics.Parse(ptx);
        Assert.Equal("Kernel_Sample", s.Entry);
        Assert.Equal(4096 + 256, s.SharedBytes);
        Assert.Equal(64, s.LocalBytes);
        Assert.Equal((1, 1), (s.Kernel.LocalLoads, s.Kernel.LocalStores));
        Assert.Equal(new PtxAccessCounts(1, 0, 1), s.Kernel.GlobalLoads);
        Assert.Equal(new PtxAccessCounts(1, 0, 0), s.Kernel.GlobalStores);
        Assert.Equal(new PtxAccessCounts(1, 1, 0), s.Kernel.SharedLoads);
        Assert.Equal(new PtxAccessCounts(0, 0, 1), s.Kernel.SharedStores);
        // %f12 feeds one add: a multiply-add; %f14 is read twice: not one.
        Assert.Equal((1, 2, 2, 1), (s.Kernel.Fma, s.Kernel.Mul, s.Kernel.Add, s.Kernel.MulAddPairs));
        Assert.Equal(1, s.Kernel.Barriers);
        Assert.Equal(1, s.Loops);
        var hot = Assert.NotNull(s.HotLoop);
        Assert.Equal(2, hot.MultiplyAdds);
        Assert.Equal(0, hot.Barriers);
        Assert.Equal(1.0, hot.MultiplyAddsPerSharedLoad);
        Assert.Null(s.MaxThreads);
        Assert.Throws<ArgumentException>(() => PtxStatistics.Parse("// no kernel here"));
    }

    [Fact]
    public void Negative_controls_a_runtime_indexed_local_array_and_scalar_shared_loads_are_reported()
    {
        using var compiler = new OfflineCompiler();
        PtxStatistics Compile(Action<ArrayView<float>, int> kernel)
        {
            var result = compiler.Compile(new OfflineKernel(typeof(PtxControlKernels), KernelEntry.Of(kernel), ["control"], true), OfflineTarget.PtxSm90);
            Assert.True(result.Succeeded, result.Error);
            return PtxStatistics.Parse(result.Code!);
        }

        var local = Compile(PtxControlKernels.LocalArrayKernel);
        Assert.True(local.LocalBytes >= 16 * sizeof(float), $"{local.LocalBytes} B of local memory reported for a runtime-indexed float[16].");
        Assert.True(local.Kernel.LocalLoads > 0 && local.Kernel.LocalStores > 0);

        var scalar = Compile(PtxControlKernels.ScalarSharedKernel);
        Assert.Equal(0, scalar.LocalBytes);
        Assert.Equal(0, scalar.Kernel.SharedLoads.V4);
        Assert.True(scalar.Kernel.SharedLoads.Scalar > 0);
        Assert.True(Assert.NotNull(scalar.HotLoop).MultiplyAddsPerSharedLoad < MinimumMultiplyAddsPerSharedLoad);
    }

    private static List<PtxKernelReport> Select(string family, string method)
    {
        var kernels = Cuda.Value.Kernels
            .Where(k => k.Kernel.Family.Name == family && k.Kernel.Entry.Method.Name.StartsWith(method, StringComparison.Ordinal))
            .ToList();
        Assert.True(kernels.Count > 0, $"The CUDA tuning lists no {family}.{method}*: renamed? Update the test's list of hot kernels.");
        return kernels;
    }
}

/// <summary>Kernels that break the PTX report's rules on purpose (negative controls); never loaded on a device.</summary>
internal static class PtxControlKernels
{
    /// <summary>A local array indexed with a run-time value: ILGPU puts it in .local memory.</summary>
    public static void LocalArrayKernel(ArrayView<float> values, int count)
    {
        var scratch = LocalMemory.Allocate<float>(16);
        for (var i = 0; i < count && i < 16; i++)
            scratch[i] = values[i];
        values[0] = scratch[count % 16];
    }

    /// <summary>A dot product over shared memory read one float at a time: one load per multiply-add.</summary>
    public static void ScalarSharedKernel(ArrayView<float> values, int count)
    {
        var tile = SharedMemory.Allocate<float>(256);
        tile[Group.IdxX] = values[Grid.GlobalIndex.X];
        Group.Barrier();
        var sum = 0f;
        for (var i = 0; i < count; i++)
            sum += tile[i] * tile[255 - i];
        values[Grid.GlobalIndex.X] = sum;
    }
}
