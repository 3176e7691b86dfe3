using GpuTransformer.Kernels.Profiling;

namespace GpuTransformer.Tests.Kernels;

/// <summary>
/// Every kernel instantiation some backend's tuning can pick — the <see cref="MatmulTile"/> and
/// <see cref="AttentionTile"/> values and the row group sizes of the CUDA, OpenCL-GPU, PoCL and
/// simulator tunings, read by <see cref="KernelInstantiations"/> so that a new tile is tested
/// without editing this file — at shapes that span at least two blocks plus a ragged edge in
/// every dimension (≈ 2.5 blocks), forward and backward, against the references. The other
/// kernel tests stay below 64 per dimension, so they never reach a second PoCL K chunk
/// (BK 128), a second query block or a second key block of the dK/dV kernel.
/// <para>
/// PoCL runs every instantiation (it launches any group size; its own are the CPU path's
/// Cpu128x32 and Q64K32T1). Every other backend runs its own tuning's, so the simulator runs
/// only its small tiles at the tiny shapes they give, and CUDA its own at full size. Where PoCL
/// is not among the test backends, instantiations no backend here runs are reported as skipped.
/// </para>
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class TileSpanningTests(Devices devices)
{
    // Matmul: K ≤ ~330 products of U(−1, 1) values summed in float32. The rounding error is
    // ~√K·2⁻²⁴·Σ|a·b| ≲ 1e-5; an indexing error moves an element by O(1).
    private const double MatmulAtol = 1e-4, MatmulRtol = 1e-4;

    // The row kernels at a BPE vocabulary's width. The row tests' tolerances were set for rows of
    // ≤ 300; float32 row sums lose ~√C·2⁻²⁴ relative (one work-item per row sums sequentially),
    // √(25 000 / 300) ≈ 9 times more, so wide rows get 20 times those tolerances (measured need:
    // 11.5× for a cross-entropy loss, 1.1× for layer norm). That is still ~1e-4 at most, far below
    // the O(1e-2…1) an indexing error or a lost block gives.
    private const int WideRow = 25_000;
    private const double WideToleranceScale = 20;

    // Stands for PoCL in the rows of instantiations that nothing here runs when PoCL is missing.
    private const string NoPoCL = "pocl (absent)";

    private static readonly MatmulLayout[] Layouts = [MatmulLayout.NN, MatmulLayout.NT, MatmulLayout.TN];

    public static TheoryData<string, MatmulTile> MatmulTiles => Rows(t => t.Matmul, Enum.GetValues<MatmulTile>());

    public static TheoryData<string, AttentionTile> AttentionTiles => Rows(t => t.Attention, Enum.GetValues<AttentionTile>());

    public static TheoryData<string, int> RowGroupSizes => Rows(t => t.RowGroupSize, KernelInstantiations.RowGroupSizes);

    /// <summary>
    /// C = act(alpha·op(A)·op(B) + C + bias) for two products of a strided batch, in every layout,
    /// M, K ≈ 2.5 × the block's BM, BK and N ≈ 3.5 × BN (and beyond 1,024 for PoCL's tile); PoCL's
    /// tile with runs of 4 column blocks per group (the last run short), also through its
    /// transposing TN and NT routes, and again with the depth split every BK (split-K).
    /// </summary>
    [Theory]
    [MemberData(nameof(MatmulTiles))]
    public void Matmul_spans_blocks_in_every_layout_batched(string backend, MatmulTile tile)
    {
        var columnRun = tile == MatmulTile.Cpu128x32 ? 4 : 0;
        var device = Device(backend, tuning => tuning with { Matmul = tile, MatmulColumnRun = columnRun });
        var block = KernelInstantiations.Matmul(tile);
        // K even: PoCL's tile reads A's rows from global memory in its interior row blocks only
        // when K is a multiple of its 2 unrolled steps; the last row block (ragged) stages them.
        // N spans one block more than M: a grid that maps row and column blocks the wrong way
        // round then misses blocks instead of permuting them. PoCL's tile runs NN and NT with
        // row blocks along the grid's x from N = RowBlocksAlongXMinimumColumns: that N too.
        var (m, k) = (Spanning(block.Rows, 3), Spanning(block.Depth, 6));
        var n = Spanning(block.Columns, 5) + block.Columns;
        Matmul_spans_blocks(device, $"{tile} on {backend}", m, n, k);
        if (tile == MatmulTile.Cpu128x32)
        {
            Matmul_spans_blocks(device, $"{tile} on {backend}", m, MatmulKernels.RowBlocksAlongXMinimumColumns + n, k);
            // K·min(M, N) above the transposing threshold: TN through Bᵀ (N < M), then through Aᵀ;
            // NT (M of at least two row blocks) through Bᵀ.
            var wide = m - 78;
            Matmul_runs_a_single_product_as_NN(device, $"{tile} on {backend}", MatmulLayout.TN, m, wide, k);
            Matmul_runs_a_single_product_as_NN(device, $"{tile} on {backend}", MatmulLayout.TN, wide, m, k);
            Matmul_runs_a_single_product_as_NN(device, $"{tile} on {backend}", MatmulLayout.NT, m, wide, k);
        }

        // Split-K for depth (KernelTuning.MatmulSplitDepth: PoCL's tuning, the only one that sets it)
        // at one slice per split: K ≈ 2.5 slices in three splits, each a partial product summed in
        // split order. The warp-tiled kernel's split-K: MatmulTests.
        if (tile == MatmulTile.Cpu128x32)
        {
            var split = Device(backend, tuning => tuning with { Matmul = tile, MatmulSplitDepth = block.Depth, MatmulColumnRun = columnRun });
            var splitWhat = $"{tile} on {backend}, K split every {block.Depth}";
            var wide = m - 78;
            Matmul_spans_blocks(split, splitWhat, m, n, k);
            Matmul_runs_a_single_product_as_NN(split, splitWhat, MatmulLayout.TN, m, wide, k);
            Matmul_runs_a_single_product_as_NN(split, splitWhat, MatmulLayout.TN, wide, m, k);
            Matmul_runs_a_single_product_as_NN(split, splitWhat, MatmulLayout.NT, m, wide, k);
        }
    }

    private static void Matmul_spans_blocks(ComputeDevice device, string what, int m, int n, int k)
    {
        var batch = new MatmulBatch(2, m * k, k * n, m * n);
        var a = TestTensors.Random(m + k, 2 * m * k);
        var b = TestTensors.Random(n + k, 2 * k * n);
        var c = TestTensors.Random(m + n, 2 * m * n);
        var bias = TestTensors.Random(n, n);
        var matmul = device.Kernels<MatmulKernels>();
        using var da = device.Upload(a);
        using var db = device.Upload(b);
        using var dBias = device.Upload(bias);
        foreach (var layout in Layouts)
        {
            // NN as a Linear forward with its epilogue; NT and TN accumulate, as the backward does.
            var (alpha, accumulate, activation) = layout switch
            {
                MatmulLayout.NN => (0.5f, false, Activation.GeluExact),
                MatmulLayout.NT => (1f, true, Activation.None),
                _ => (-2f, true, Activation.None),
            };
            var withBias = layout == MatmulLayout.NN;
            var expected = MatmulReference.Multiply(c, a, b, m, n, k, layout, alpha, accumulate, withBias ? bias : default, activation, batch);
            using var dc = device.Upload(c);
            var epilogue = new MatmulEpilogue { Alpha = alpha, Accumulate = accumulate, Bias = withBias ? dBias.View : default, Activation = activation };
            matmul.Multiply(dc.View, da.View, db.View, m, n, k, layout, epilogue, batch);
            TestTensors.AssertClose(expected, device.Download(dc), MatmulAtol, MatmulRtol, $"{what}: {layout} M {m}, N {n}, K {k}, 2 products");
        }
    }

    /// <summary>
    /// PoCL's tile runs a single TN product whose narrower operand has at least
    /// <see cref="MatmulKernels.TransposeMinimumElements"/> elements as a transpose of that operand
    /// into scratch and an NN product (of Cᵀ, stored transposed, when B is the narrower), and a
    /// single NT product of two or more row blocks as a transpose of B and an NN product: the
    /// profiler sees which transpose ran, and the result (operands read at an offset with padded
    /// rows, C with padded rows accumulated with alpha, bias and GELU) matches the reference.
    /// </summary>
    private static void Matmul_runs_a_single_product_as_NN(ComputeDevice device, string what, MatmulLayout layout, int m, int n, int k)
    {
        var transposed = layout == MatmulLayout.TN ? (long)Math.Min(m, n) * k : (long)n * k;
        Assert.True(transposed >= MatmulKernels.TransposeMinimumElements, $"{transposed} elements to transpose is below the threshold");
        const int offset = 3;
        var (aRows, aColumns) = layout == MatmulLayout.TN ? (k, m) : (m, k);
        var (bRows, bColumns) = layout == MatmulLayout.NT ? (n, k) : (k, n);
        var (lda, ldb, ldc) = (aColumns + 7, bColumns + 5, n + 2);
        var a = TestTensors.Random(m + 2 * k, offset + (aRows * lda));
        var b = TestTensors.Random(n + 2 * k, offset + (bRows * ldb));
        var c = TestTensors.Random(m + 2 * n, m * ldc);
        var bias = TestTensors.Random(2 * n, n);
        var expected = MatmulReference.Multiply(c, a.AsSpan(offset), b.AsSpan(offset), m, n, k, layout, -2f, accumulate: true, bias, Activation.GeluExact,
            lda: lda, ldb: ldb, ldc: ldc);
        var matmul = device.Kernels<MatmulKernels>();
        using var da = device.Upload(a);
        using var db = device.Upload(b);
        using var dc = device.Upload(c);
        using var dBias = device.Upload(bias);
        var profiler = KernelProfiler.Attach(device);
        try
        {
            profiler.Start();
            var epilogue = new MatmulEpilogue { Alpha = -2f, Accumulate = true, Bias = dBias.View, Activation = Activation.GeluExact };
            matmul.Multiply(dc.View, ((ArrayView<float>)da.View).SubView(offset), ((ArrayView<float>)db.View).SubView(offset), m, n, k, layout, epilogue,
                lda: lda, ldb: ldb, ldc: ldc);
            profiler.Stop(1);
            var kernels = profiler.Report(layout.ToString()).Entries.Where(e => e.Family == "Matmul").Select(e => e.Kernel).Distinct().Order(StringComparer.Ordinal);
            Assert.Equal(["multiply NN", layout == MatmulLayout.NT || n < m ? "transpose B" : "transpose A"], kernels);
        }
        finally
        {
            profiler.Detach();
        }
        TestTensors.AssertClose(expected, device.Download(dc), MatmulAtol, MatmulRtol, $"{what}: {layout} through a transpose, M {m}, N {n}, K {k}, ld {lda}/{ldb}/{ldc}");
    }

    /// <summary>
    /// Forward, backward (dQ, dK, dV) and probabilities with Tq, Tk ≈ 2.5 blocks of the larger of
    /// the owned and streamed block: causal self-attention, padding with a fully padded sequence,
    /// cross-attention with a causal offset and padding, and fused q/k/v at head size 128; head
    /// sizes on both sides of 64 reach both head-bound instantiations.
    /// </summary>
    [Theory]
    [MemberData(nameof(AttentionTiles))]
    public void Attention_spans_query_and_key_blocks_forward_and_backward(string backend, AttentionTile tile)
    {
        var device = Device(backend, tuning => tuning with { Attention = tile });
        var block = KernelInstantiations.Attention(tile);
        var largest = Math.Max(block.OwnedRows, block.StreamedRows);
        var t = Spanning(largest, 3);
        var tk = t + block.StreamedRows + 2; // another ragged edge, and Tk ≠ Tq
        var on = $"{tile} on {backend}";
        AttentionTests.Case[] cases =
        [
            new($"{on}: causal self B2 H2 T{t} d40", new(2, 2, t, t, 40), Causal: true),
            new($"{on}: padding, last sequence fully padded, B2 H2 T{t} d72", new(2, 2, t, t, 72), Padding: "last"),
            new($"{on}: cross Tq{t} Tk{tk} d64, causal offset {tk - t}, padding", new(2, 2, t, tk, 64), Causal: true, CausalOffset: tk - t, Padding: "some"),
            new($"{on}: fused qkv causal B1 H2 T{t} d128", new(1, 2, t, t, 128), Causal: true, Fused: true),
        ];
        foreach (var c in cases)
            AttentionTests.Check(device, c);
    }

    /// <summary>Softmax forward and backward over rows ≈ 2.5 groups wide, and (but on the simulator) 25 000 wide.</summary>
    [Theory]
    [MemberData(nameof(RowGroupSizes))]
    public void Softmax_rows_span_groups(string backend, int groupSize)
    {
        var device = Device(backend, tuning => tuning with { RowGroupSize = groupSize });
        foreach (var columns in RowWidths(device, groupSize))
            SoftmaxTests.CheckRandom(device, 3, columns, new SoftmaxOptions { Scale = 0.6f }, $"group {groupSize} on {backend}: [3, {columns}]");
    }

    /// <summary>Layer norm forward and backward (dx, dγ, dβ) over rows ≈ 2.5 groups wide, and (but on the simulator) 25 000 wide.</summary>
    [Theory]
    [MemberData(nameof(RowGroupSizes))]
    public void LayerNorm_rows_span_groups(string backend, int groupSize)
    {
        var device = Device(backend, tuning => tuning with { RowGroupSize = groupSize });
        foreach (var columns in RowWidths(device, groupSize))
            LayerNormTests.CheckRandom(device, 3, columns, $"group {groupSize} on {backend}: [3, {columns}]", ToleranceScale(columns));
    }

    /// <summary>Cross-entropy forward, backward and fused, with ignored rows, over vocabularies ≈ 2.5 groups and (but on the simulator) 25 000 wide.</summary>
    [Theory]
    [MemberData(nameof(RowGroupSizes))]
    public void Cross_entropy_rows_span_groups(string backend, int groupSize)
    {
        var device = Device(backend, tuning => tuning with { RowGroupSize = groupSize });
        const int rows = 5;
        foreach (var vocabulary in RowWidths(device, groupSize))
        {
            var targets = CrossEntropyTests.Targets(rows, vocabulary, CrossEntropyOptions.DefaultIgnoreIndex);
            CrossEntropyTests.Check(
                device, targets, rows, vocabulary, CrossEntropyOptions.Default, $"group {groupSize} on {backend}: [{rows}, {vocabulary}]", ToleranceScale(vocabulary));
        }
    }

    /// <summary>2·tile + tile/2 + <paramref name="ragged"/>: two whole blocks, half of a third, and an edge no block size divides.</summary>
    private static int Spanning(int tile, int ragged)
    {
        var size = (2 * tile) + (tile / 2) + ragged;
        Assert.True(tile == 1 || size % tile != 0, $"{size} is a multiple of the block {tile}");
        return size;
    }

    private static double ToleranceScale(int columns) => columns == WideRow ? WideToleranceScale : 1;

    private static int[] RowWidths(ComputeDevice device, int groupSize) =>
        device.Backend == Backend.Cpu ? [Spanning(groupSize, 3)] : [Spanning(groupSize, 3), WideRow];

    /// <summary>The shared device for <paramref name="backend"/> with its tuning changed by <paramref name="tune"/>.</summary>
    private ComputeDevice Device(string backend, Func<KernelTuning, KernelTuning> tune)
    {
        Assert.SkipWhen(backend == NoPoCL, $"no backend here runs this instantiation: every one runs on PoCL, which is missing ({Devices.WhyMissing("opencl")})");
        var own = devices.Get(backend);
        var tuning = tune(own.Tuning);
        return tuning == own.Tuning ? own : devices.Get(backend, tuning);
    }

    /// <summary>
    /// One row per (backend, instantiation): every instantiation in <paramref name="all"/> on PoCL,
    /// the device's own (<paramref name="pick"/> of its tuning) on every other backend, and a
    /// skipped row for each instantiation nothing here runs.
    /// </summary>
    private static TheoryData<string, T> Rows<T>(Func<KernelTuning, T> pick, IReadOnlyList<T> all)
    {
        var data = new TheoryData<string, T>();
        var covered = new HashSet<T>();
        foreach (var backend in Devices.Available)
        {
            var device = Devices.Describe(backend);
            var isPoCL = device.Backend == Backend.OpenCL && device.Kind == DeviceKind.Cpu;
            foreach (var value in isPoCL ? all : [pick(KernelTuning.For(device.Backend, device))])
            {
                data.Add(backend, value);
                covered.Add(value);
            }
        }
        foreach (var value in all.Where(v => !covered.Contains(v)))
            data.Add(NoPoCL, value);
        return data;
    }
}
