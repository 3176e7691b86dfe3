using System.Runtime.CompilerServices;
using GpuTransformer.Kernels.Backends;
using ILGPU;
using ILGPU.Runtime;

namespace GpuTransformer.Kernels;

// Register rows (TN), micro-tiles (TM rows) and unrolled depth steps by size; see MatmulRegisters.cs.
using M4x32 = RowsPair<RowsPair<Rows1<RegPair<RegPair<RegPair<RegPair<RegPair<Reg1>>>>>>, RegPair<RegPair<RegPair<RegPair<RegPair<Reg1>>>>>>, RegPair<RegPair<RegPair<RegPair<RegPair<Reg1>>>>>>;
using M4x32Unfused = RowsPair<RowsPair<Rows1<RegPair<RegPair<RegPair<RegPair<RegPair<Reg1Unfused>>>>>>, RegPair<RegPair<RegPair<RegPair<RegPair<Reg1Unfused>>>>>>, RegPair<RegPair<RegPair<RegPair<RegPair<Reg1Unfused>>>>>>;
using M4x4 = RowsPair<RowsPair<Rows1<RegPair<RegPair<Reg1>>>, RegPair<RegPair<Reg1>>>, RegPair<RegPair<Reg1>>>;
using R32 = RegPair<RegPair<RegPair<RegPair<RegPair<Reg1>>>>>;
using R32Unfused = RegPair<RegPair<RegPair<RegPair<RegPair<Reg1Unfused>>>>>;
using R4 = RegPair<RegPair<Reg1>>;
using S16 = StepPair<StepPair<StepPair<StepPair<Step1>>>>;
using S2 = StepPair<Step1>;
using S8 = StepPair<StepPair<StepPair<Step1>>>;
using TiledKernel = System.Action<ILGPU.ArrayView<float>, ILGPU.ArrayView<float>, ILGPU.ArrayView<float>, ILGPU.ArrayView<float>, GpuTransformer.Kernels.MatmulSizes, GpuTransformer.Kernels.MatmulBatchArgs, GpuTransformer.Kernels.MatmulEpilogueArgs>;
using TiledLauncher = System.Action<ILGPU.Runtime.AcceleratorStream, ILGPU.KernelConfig, ILGPU.ArrayView<float>, ILGPU.ArrayView<float>, ILGPU.ArrayView<float>, ILGPU.ArrayView<float>, GpuTransformer.Kernels.MatmulSizes, GpuTransformer.Kernels.MatmulBatchArgs, GpuTransformer.Kernels.MatmulEpilogueArgs>;

/// <summary>How the operands of <see cref="MatmulKernels"/> are stored (row-major, before any leading-dimension padding).</summary>
public enum MatmulLayout
{
    /// <summary>C[M,N] = A[M,K] · B[K,N].</summary>
    NN,

    /// <summary>C[M,N] = A[M,K] · B[N,K]ᵀ: a Linear forward X·Wᵀ with W stored [out, in] as PyTorch does; Q·Kᵀ.</summary>
    NT,

    /// <summary>C[M,N] = A[K,M]ᵀ · B[K,N]: a weight gradient dW = dYᵀ·X.</summary>
    TN,
}

/// <summary>
/// A strided batch of matrix products with two levels, so per-head products need no
/// transposes: product (b1, b2) for b1 &lt; <see cref="Count"/>, b2 &lt; <see cref="InnerCount"/>
/// reads A at element offset b1·<see cref="StrideA"/> + b2·<see cref="InnerStrideA"/> (B and C alike).
/// </summary>
/// <param name="Count">Outer batch size (e.g. B).</param>
/// <param name="StrideA">Elements between consecutive outer batches of A (0 broadcasts one A).</param>
/// <param name="StrideB">Elements between consecutive outer batches of B (0 broadcasts one B).</param>
/// <param name="StrideC">Elements between consecutive outer batches of C.</param>
/// <param name="InnerCount">Inner batch size (e.g. heads H); 1 for a one-level batch.</param>
/// <param name="InnerStrideA">Elements between consecutive inner batches of A (e.g. the head size d).</param>
/// <param name="InnerStrideB">Elements between consecutive inner batches of B.</param>
/// <param name="InnerStrideC">Elements between consecutive inner batches of C.</param>
public readonly record struct MatmulBatch(
    int Count,
    long StrideA,
    long StrideB,
    long StrideC,
    int InnerCount = 1,
    long InnerStrideA = 0,
    long InnerStrideB = 0,
    long InnerStrideC = 0)
{
    /// <summary>One product, no batching.</summary>
    public static MatmulBatch Single { get; } = new(1, 0, 0, 0);

    /// <summary>Number of products: <see cref="Count"/> · <see cref="InnerCount"/>.</summary>
    public long Total => (long)Count * InnerCount;
}

/// <summary>
/// What <see cref="MatmulKernels"/> does with each product P = op(A)·op(B) before writing C:
/// C = act(<see cref="Alpha"/>·P + (<see cref="Accumulate"/> ? C : 0) + bias[column]).
/// <c>default</c> is a plain C = P.
/// </summary>
public readonly record struct MatmulEpilogue
{
    private readonly float? alpha;

    /// <summary>Scale of the product (default 1), e.g. 1/√d for attention scores.</summary>
    public float Alpha
    {
        get => alpha ?? 1f;
        init => alpha = value;
    }

    /// <summary>Add into the existing C (gradient accumulation) instead of overwriting it.</summary>
    public bool Accumulate { get; init; }

    /// <summary>Optional bias[N] added to every row (default: none).</summary>
    public ArrayView<float> Bias { get; init; }

    /// <summary>Activation applied last (default: none).</summary>
    public Activation Activation { get; init; }

    /// <summary>Whether <see cref="Bias"/> was given.</summary>
    public bool HasBias => Bias.IsValid && Bias.Length > 0;
}

/// <summary>
/// Matrix products for Linear layers, batched attention products and their backward passes:
/// C = act(alpha·op(A)·op(B) + (accumulate ? C : 0) + bias), row-major float32, any sizes,
/// leading dimensions for sub-matrices of wider buffers, two-level strided batches.
/// <para>
/// <see cref="Multiply"/> runs the tiled kernel: a group computes a BM×BN block of C,
/// staging BM×BK and BK×BN slices of A and B in shared memory; each thread accumulates a
/// TM×TN micro-tile in registers (MatmulRegisters.cs). Thread (tx, ty) owns rows
/// ty + i·BM/TM and columns tx + j·BN/TN, so neighbouring threads read neighbouring
/// shared-memory words and write neighbouring C elements (conflict-free and coalesced on
/// GPUs). The block shape is a type parameter picked by <see cref="KernelTuning.Matmul"/>;
/// the layout is a type parameter too, so each layout stages its slices with coalesced
/// loads; the epilogue is runtime uniforms. A device compiles three tiled kernels (one per
/// layout) and the naive one.
/// </para>
/// <para>
/// GPUs (<see cref="MatmulTile.Tile128x128"/>) run the warp-tiled kernel instead (version 3,
/// the shape of the fast CUDA-core SGEMMs): 8 warps of 8×4 lanes, each lane an 8×8 micro-tile
/// in two 4-row and two 4-column halves, so that every shared-memory read is one 128-bit load
/// feeding 16 multiply-adds (4 loads per 64 per depth step); the A and B slices are double
/// buffered, the next slice's global loads issued before this slice's multiply-adds, one
/// barrier per slice; 128-bit global loads in a second instantiation chosen at launch when
/// every leading dimension, batch stride and view offset is a multiple of 4; 256 threads
/// capped at 128 registers (<see cref="KernelSpecialization"/>: 2 groups per multiprocessor).
/// When a product has too few blocks to fill the device (<see cref="KernelTuning.MatmulMinimumGroups"/>,
/// e.g. a weight gradient [768, 256] with K = 2048: 12 blocks on 132 multiprocessors) the depth
/// is split across groups: each writes its partial product to a scratch buffer and a second
/// kernel adds the partials in split order and applies the epilogue (deterministic, no atomics).
/// </para>
/// <para>
/// On PoCL a work-group runs as a loop over its work-items, so the CPU shape gives every
/// work-item a contiguous 4×32 micro-tile (LLVM vectorises it inside the work-item) and lets
/// a group of 32 work-items share one staged B slice; see <see cref="MatmulTile.Cpu128x32"/>.
/// Its NN kernel reads A's rows in place, while a TN kernel must stage a [BK, BM] slice of Aᵀ
/// for every column block, so a single TN product (a weight gradient) copies its narrower
/// operand transposed into scratch (<see cref="TransposeKernel"/>, K·min(M, N) elements) and
/// runs as NN: Aᵀ·B, or Cᵀ = Bᵀ·A stored transposed (<see cref="MatmulSizes.TransposedC"/>);
/// a single NT product of at least two row blocks (a Linear forward) likewise copies B [N, K]
/// transposed once, where the NT kernel transposed every B slice while staging it, once per row
/// block. A group computes a run of <see cref="KernelTuning.MatmulColumnRun"/> column blocks,
/// so that each depth slice of A is read from memory once per run.
/// </para>
/// <para><see cref="MultiplyNaive"/> (version 1: one output per thread, operands from global memory) is the baseline and a twin.</para>
/// </summary>
public sealed class MatmulKernels : IKernelFamily<MatmulKernels>, IDisposable
{
    /// <summary>Most products in one launch (CUDA's grid z limit) and most blocks along M (grid y).</summary>
    private const int MaxGridDimension = 65535;

    /// <summary>
    /// The fewest columns at which PoCL's tile runs row blocks along the grid's x: with fewer
    /// column blocks the default order revisits each B slice soon anyway, and the training
    /// step's narrow products (N = 256) measured no gain.
    /// </summary>
    internal const int RowBlocksAlongXMinimumColumns = 1024;

    /// <summary>Fewest depth slices per split of a split-K product: fewer would spend more on partials than on products.</summary>
    private const int MinimumSlicesPerSplit = 4;

    /// <summary>Most floats of split-K partials (256 MiB); a product that would need more splits less.</summary>
    private const long MaxScratchFloats = 64L << 20;

    private readonly ComputeDevice device;
    private readonly TiledKernels tiled;
    private readonly TiledLauncher[] launchers;        // by layout: NN, NT, TN
    private readonly TiledLauncher?[] alignedLaunchers; // 128-bit global loads, by layout (GPU tiles)
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, MatmulSizes, MatmulBatchArgs, MatmulEpilogueArgs> naive;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, MatmulSizes, MatmulBatchArgs, MatmulEpilogueArgs>? splitSum;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, MatmulSizes, MatmulBatchArgs, MatmulEpilogueArgs> fewRows;
    private readonly ScratchBuffer<float> scratch;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, int, int>? transpose;
    private readonly ScratchBuffer<float> transposedOperand;

    private MatmulKernels(ComputeDevice device)
    {
        this.device = device;
        scratch = new ScratchBuffer<float>(device);
        transposedOperand = new ScratchBuffer<float>(device);
        var accelerator = device.Accelerator;
        tiled = TiledKernels.For(device.Tuning.Matmul);
        if (tiled.ThreadsPerGroup > accelerator.MaxNumThreadsPerGroup)
        {
            throw new InvalidOperationException(
                $"Matmul tile {device.Tuning.Matmul} needs {tiled.ThreadsPerGroup} threads per group; " +
                $"{device.Description.Name} allows {accelerator.MaxNumThreadsPerGroup}. Choose a smaller KernelTuning.Matmul.");
        }
        launchers = [.. tiled.Kernels.Select(k => accelerator.LoadKernel(k, tiled.Specialization))];
        alignedLaunchers = [.. tiled.AlignedKernels.Select(k => k is null ? null : accelerator.LoadKernel(k, tiled.Specialization))];
        naive = accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, MatmulSizes, MatmulBatchArgs, MatmulEpilogueArgs>(NaiveKernel);
        if (tiled.SplitsDepth)
            splitSum = accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, MatmulSizes, MatmulBatchArgs, MatmulEpilogueArgs>(SplitSumKernel);
        fewRows = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, MatmulSizes, MatmulBatchArgs, MatmulEpilogueArgs>(FewRowsKernel);
        if (tiled.RunsAsNN)
            transpose = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, int, int, int>(TransposeKernel);
    }

    /// <inheritdoc/>
    public static MatmulKernels Create(ComputeDevice device) => new(device);

    /// <inheritdoc/>
    public static IEnumerable<KernelEntry> EntryPoints(KernelTuning tuning)
    {
        ArgumentNullException.ThrowIfNull(tuning);
        var tiled = TiledKernels.For(tuning.Matmul);
        var entries = tiled.Kernels.Concat(tiled.AlignedKernels.OfType<TiledKernel>())
            .Select(k => KernelEntry.Of(k, tiled.Specialization))
            .Append(KernelEntry.Of(NaiveKernel))
            .Append(KernelEntry.Of(FewRowsKernel))
            .ToList();
        if (tiled.SplitsDepth)
            entries.Add(KernelEntry.Of(SplitSumKernel));
        if (tiled.RunsAsNN)
            entries.Add(KernelEntry.Of(TransposeKernel));
        return entries;
    }

    /// <summary>Profile labels of the layouts, indexed by <see cref="MatmulLayout"/>.</summary>
    private static readonly string[] LayoutNames = ["multiply NN", "multiply NT", "multiply TN"];

    /// <summary>Depth steps of the few-rows kernel's dot product: independent partial sums, so the multiply-adds do not wait on each other.</summary>
    private const int FewRowsLanes = 8;

    /// <summary>Frees the split-K scratch buffer, if one was needed.</summary>
    public void Dispose()
    {
        scratch.Dispose();
        transposedOperand.Dispose();
    }

    /// <summary>
    /// C = act(alpha·op(A)·op(B) + (accumulate ? C : 0) + bias[column]) with the tiled kernel,
    /// for every product of <paramref name="batch"/>. Per product: NN A[M,K]·B[K,N];
    /// NT A[M,K]·B[N,K]ᵀ; TN A[K,M]ᵀ·B[K,N]; C[M,N]. Row-major with row strides lda, ldb, ldc.
    /// </summary>
    /// <param name="c">Output C [M, ldc] per product; must not overlap A, B or the bias, and products must write disjoint elements.</param>
    /// <param name="a">A: [M, lda] for NN/NT, [K, lda] for TN.</param>
    /// <param name="b">B: [K, ldb] for NN/TN, [N, ldb] for NT.</param>
    /// <param name="m">Rows of C (≥ 1).</param>
    /// <param name="n">Columns of C (≥ 1).</param>
    /// <param name="k">Inner dimension (≥ 1).</param>
    /// <param name="layout">Operand layout.</param>
    /// <param name="epilogue">Alpha, accumulate, bias, activation (default: C = op(A)·op(B)).</param>
    /// <param name="batch">Strided two-level batch (default: one product).</param>
    /// <param name="lda">Row stride of A in elements; 0 = packed (K for NN/NT, M for TN).</param>
    /// <param name="ldb">Row stride of B in elements; 0 = packed (N for NN/TN, K for NT).</param>
    /// <param name="ldc">Row stride of C in elements; 0 = packed (N).</param>
    /// <exception cref="ArgumentException">
    /// A size is not positive, a view is too small for the shape, a leading dimension is
    /// below its row length, a batch stride is negative (or 0 for C), or C overlaps an input.
    /// </exception>
    public void Multiply(
        ArrayView<float> c, ArrayView<float> a, ArrayView<float> b, int m, int n, int k,
        MatmulLayout layout = MatmulLayout.NN, MatmulEpilogue epilogue = default, MatmulBatch? batch = null,
        int lda = 0, int ldb = 0, int ldc = 0)
    {
        var args = Prepare(c, a, b, m, n, k, layout, epilogue, batch, lda, ldb, ldc);
        if (layout == MatmulLayout.NT && m <= device.Tuning.MatmulFewRows)
        {
            LaunchFewRows(c, a, b, args);
            return;
        }
        if (layout == MatmulLayout.TN && transpose is not null && args.Products == 1 && (long)Math.Min(m, n) * k >= TransposeMinimumElements)
        {
            // PoCL: the NN kernel reads A's rows in place, so the narrower operand is transposed once
            // and the product runs as NN: Aᵀ[M, K]·B, or (N < M) Cᵀ = Bᵀ[N, K]·A stored transposed.
            var transposeB = n < m;
            var rows = transposeB ? n : m;
            var transposed = TransposedCopy(transposeB ? "transpose B" : "transpose A", transposeB ? b : a, k, rows, transposeB ? args.Sizes.Ldb : args.Sizes.Lda);
            args = args with
            {
                Sizes = transposeB
                    ? args.Sizes with { M = n, N = m, Lda = k, Ldb = args.Sizes.Lda, TransposedC = 1 }
                    : args.Sizes with { Lda = k },
            };
            (a, b) = transposeB ? (transposed, a) : (transposed, b);
            (m, n) = (args.Sizes.M, args.Sizes.N);
            layout = MatmulLayout.NN;
        }
        if (layout == MatmulLayout.NT && transpose is not null && args.Products == 1 && m >= 2 * tiled.BlockRows
            && (long)n * k >= TransposeMinimumElements)
        {
            // PoCL: B [N, K] transposed once into [K, N], so the product runs as NN instead of
            // transposing each B slice while staging it, once per row block.
            b = TransposedCopy("transpose B", b, n, k, args.Sizes.Ldb);
            args = args with { Sizes = args.Sizes with { Ldb = n, BColumnStride = 1, BDepthStride = n } };
            layout = MatmulLayout.NN;
        }
        var blocksDown = (m + tiled.BlockRows - 1) / tiled.BlockRows;
        var blocksAcross = (n + tiled.BlockColumns - 1) / tiled.BlockColumns;
        // A run of column blocks per group (PoCL); the grid's groups across cover a run each.
        var run = Math.Clamp(Math.Min(device.Tuning.MatmulColumnRun, tiled.MaxColumnRun), 1, blocksAcross);
        blocksAcross = (blocksAcross + run - 1) / run;
        var alongX = tiled.RowBlocksAlongXFor(layout, n);
        args = args with { Sizes = args.Sizes with { RowBlocksAlongX = alongX ? 1 : 0, ColumnRun = run } };
        if (!alongX && blocksDown > MaxGridDimension)
            throw new ArgumentException($"M = {m} needs {blocksDown} blocks of {tiled.BlockRows} rows; at most {MaxGridDimension}.", nameof(m));
        if (alongX && blocksAcross > MaxGridDimension)
            throw new ArgumentException($"N = {n} needs {blocksAcross} blocks of {tiled.BlockColumns} columns; at most {MaxGridDimension}.", nameof(n));
        var kernel = alignedLaunchers[(int)layout] is { } aligned && Aligned(c, a, b, args) ? aligned : launchers[(int)layout];
        var splits = DepthSplits(blocksAcross, (long)blocksAcross * blocksDown * args.Products, m, n, k, args.Products);
        using var profile = device.Profile("Matmul", LayoutNames[(int)layout], 2.0 * m * n * k * args.Products,
            sizeof(float) * (((double)m * k) + ((double)k * n) + ((double)m * n)) * args.Products);
        if (splits == 1)
        {
            kernel(device.Stream, new KernelConfig(TiledKernels.Grid(alongX, blocksAcross, blocksDown, args.Products), tiled.Group),
                c, a, b, args.Bias, args.Sizes, args.Batch, args.Epilogue);
            return;
        }

        // Split-K: partial products [products, splits, M, N] into the scratch, then their sum in split order.
        var chunk = SplitChunk(k, splits);
        var partials = scratch.View((long)splits * args.Products * m * n);
        var sizes = args.Sizes with { Ldc = n, Splits = splits, DepthChunk = chunk, TransposedC = 0 };
        kernel(device.Stream, new KernelConfig(TiledKernels.Grid(alongX, blocksAcross, blocksDown, args.Products * splits), tiled.Group),
            partials, a, b, args.Bias, sizes, args.Batch, MatmulEpilogueArgs.Plain);
        splitSum!(device.Stream, m * n * args.Products, c, partials, args.Bias, args.Sizes with { Splits = splits }, args.Batch, args.Epilogue);
    }

    /// <summary>
    /// The [rows, columns] operand <paramref name="source"/> (row stride <paramref name="ld"/>)
    /// copied transposed into the scratch, [columns, rows] packed (<see cref="TransposeKernel"/>,
    /// profiled as <paramref name="kernel"/>): PoCL's single TN and NT products then run as NN.
    /// </summary>
    private ArrayView<float> TransposedCopy(string kernel, ArrayView<float> source, int rows, int columns, int ld)
    {
        var transposed = transposedOperand.View((long)rows * columns);
        using var profile = device.Profile("Matmul", kernel, 0, 2.0 * sizeof(float) * rows * columns);
        var groupsDown = (columns + TransposeColumns * TransposeGroup - 1) / (TransposeColumns * TransposeGroup);
        transpose!(device.Stream, new KernelConfig(new Index2D((rows + TransposeRows - 1) / TransposeRows, groupsDown), new Index2D(1, TransposeGroup)),
            transposed, source, rows, columns, ld);
        return transposed;
    }

    /// <summary>
    /// How many depth splits a product of <paramref name="groups"/> blocks gets: 1 unless the
    /// tile supports split-K and either the grid has fewer groups than <see cref="KernelTuning.MatmulMinimumGroups"/>
    /// (then enough to reach it, each split at least <see cref="MinimumSlicesPerSplit"/> slices deep)
    /// or K is deeper than <see cref="KernelTuning.MatmulSplitDepth"/> with more than one column
    /// block (then splits of at most that depth); within the grid's z limit and <see cref="MaxScratchFloats"/>.
    /// </summary>
    private int DepthSplits(int blocksAcross, long groups, int m, int n, int k, int products)
    {
        if (!tiled.SplitsDepth)
            return 1;
        var wanted = device.Tuning.MatmulMinimumGroups;
        var splitDepth = device.Tuning.MatmulSplitDepth;
        int splits;
        if (groups < wanted)
            splits = (int)Math.Min((wanted + groups - 1) / groups, k / (MinimumSlicesPerSplit * tiled.BlockDepth));
        else if (splitDepth > 0 && blocksAcross > 1 && k > splitDepth)
            splits = (k + splitDepth - 1) / splitDepth;
        else
            return 1;
        splits = Math.Min(splits, MaxGridDimension / products);
        splits = (int)Math.Min(splits, MaxScratchFloats / ((long)m * n * products));
        return splits < 2 ? 1 : (k + SplitChunk(k, splits) - 1) / SplitChunk(k, splits);
    }

    /// <summary>Depth per split: K/splits rounded up to whole slices.</summary>
    private int SplitChunk(int k, int splits)
    {
        var slices = (k + tiled.BlockDepth - 1) / tiled.BlockDepth;
        return (slices + splits - 1) / splits * tiled.BlockDepth;
    }

    /// <summary>
    /// Whether every row of A, B and C starts on a 16-byte boundary (buffers themselves are:
    /// cudaMalloc aligns to 256 bytes, OpenCL to its base-address alignment): view offsets,
    /// leading dimensions and batch strides all multiples of 4 floats.
    /// </summary>
    private static bool Aligned(ArrayView<float> c, ArrayView<float> a, ArrayView<float> b, in LaunchArguments args)
    {
        static bool Offset(ArrayView<float> view) => ((IContiguousArrayView)view).Index % 4 == 0;
        var batch = args.Batch;
        return Offset(a) && Offset(b) && Offset(c) && Offset(args.Bias)
            && (args.Sizes.Lda | args.Sizes.Ldb | args.Sizes.Ldc) % 4 == 0
            && (batch.StrideA | batch.StrideB | batch.StrideC | batch.InnerStrideA | batch.InnerStrideB | batch.InnerStrideC) % 4 == 0;
    }

    /// <summary>
    /// Same contract as <see cref="Multiply"/>, computed by the naive kernel (one thread per
    /// output element, operands read from global memory): the baseline for benchmarks.
    /// </summary>
    /// <exception cref="ArgumentException">As for <see cref="Multiply"/>, or more than 2³¹ − 1 outputs in all.</exception>
    internal void MultiplyNaive(
        ArrayView<float> c, ArrayView<float> a, ArrayView<float> b, int m, int n, int k,
        MatmulLayout layout = MatmulLayout.NN, MatmulEpilogue epilogue = default, MatmulBatch? batch = null,
        int lda = 0, int ldb = 0, int ldc = 0)
    {
        var args = Prepare(c, a, b, m, n, k, layout, epilogue, batch, lda, ldb, ldc);
        var outputs = (long)m * n * args.Products;
        if (outputs > int.MaxValue)
            throw new ArgumentException($"{args.Products} products of C [{m}, {n}] are {outputs} outputs; the naive kernel indexes them with 32 bits.", nameof(batch));
        using var profile = device.Profile("Matmul", "naive", 2.0 * m * n * k * args.Products);
        naive(device.Stream, (int)outputs, c, a, b, args.Bias, args.Sizes, args.Batch, args.Epilogue);
    }

    /// <summary>
    /// Same contract as <see cref="Multiply"/> for the NT layout (C[M,N] = A[M,K]·B[N,K]ᵀ, a
    /// Linear forward X·Wᵀ), computed by the few-rows kernel: one thread per column of C, each
    /// a dot product of a contiguous row of B with every row of A. It is what
    /// <see cref="Multiply"/> runs for NT products of at most <see cref="KernelTuning.MatmulFewRows"/>
    /// rows (decoding: one row per sequence), where the tiled kernel would compute a whole block
    /// of rows for one; any M works, but each row reads B again.
    /// </summary>
    /// <exception cref="ArgumentException">As for <see cref="Multiply"/>.</exception>
    public void MultiplyFewRows(
        ArrayView<float> c, ArrayView<float> a, ArrayView<float> b, int m, int n, int k,
        MatmulEpilogue epilogue = default, MatmulBatch? batch = null, int lda = 0, int ldb = 0, int ldc = 0) =>
        LaunchFewRows(c, a, b, Prepare(c, a, b, m, n, k, MatmulLayout.NT, epilogue, batch, lda, ldb, ldc));

    /// <summary>The few-rows kernel over validated arguments: grid (⌈N / group⌉, products) of ElementGroupSize columns.</summary>
    private void LaunchFewRows(ArrayView<float> c, ArrayView<float> a, ArrayView<float> b, in LaunchArguments args)
    {
        var (m, n, k) = (args.Sizes.M, args.Sizes.N, args.Sizes.K);
        var group = device.Tuning.ElementGroupSize;
        using var profile = device.Profile("Matmul", "multiply few rows NT", 2.0 * m * n * k * args.Products,
            sizeof(float) * (((double)m * k) + ((double)k * n) + ((double)m * n)) * args.Products);
        fewRows(device.Stream, new KernelConfig(new Index2D((n + group - 1) / group, args.Products), new Index2D(group, 1)),
            c, a, b, args.Bias, args.Sizes, args.Batch, args.Epilogue);
    }

    /// <summary>
    /// Validates every argument (before any launch) and packs the kernel parameters. Messages
    /// are built only on failure, so a valid launch allocates nothing.
    /// </summary>
    private static LaunchArguments Prepare(
        ArrayView<float> c, ArrayView<float> a, ArrayView<float> b, int m, int n, int k,
        MatmulLayout layout, MatmulEpilogue epilogue, MatmulBatch? batch, int lda, int ldb, int ldc)
    {
        if (!Enum.IsDefined(layout))
            throw new ArgumentException($"Unknown layout {layout}.", nameof(layout));
        if (m <= 0 || n <= 0 || k <= 0)
            throw new ArgumentException($"Matmul sizes must be positive, got {Shape(layout, m, n, k)}.", m <= 0 ? nameof(m) : n <= 0 ? nameof(n) : nameof(k));

        // Rows × row length of A and B as stored.
        var (aRows, aColumns) = layout == MatmulLayout.TN ? (k, m) : (m, k);
        var (bRows, bColumns) = layout == MatmulLayout.NT ? (n, k) : (k, n);
        lda = lda == 0 ? aColumns : lda;
        ldb = ldb == 0 ? bColumns : ldb;
        ldc = ldc == 0 ? n : ldc;
        if (lda < aColumns)
            throw new ArgumentException($"lda = {lda} is less than the row length {aColumns} of A [{aRows}, {aColumns}] ({Shape(layout, m, n, k)}).", nameof(lda));
        if (ldb < bColumns)
            throw new ArgumentException($"ldb = {ldb} is less than the row length {bColumns} of B [{bRows}, {bColumns}] ({Shape(layout, m, n, k)}).", nameof(ldb));
        if (ldc < n)
            throw new ArgumentException($"ldc = {ldc} is less than the row length {n} of C [{m}, {n}] ({Shape(layout, m, n, k)}).", nameof(ldc));

        var products = batch ?? MatmulBatch.Single;
        if (products.Count <= 0 || products.InnerCount <= 0)
            throw new ArgumentException($"Batch counts must be positive, got {products.Count}×{products.InnerCount} ({Shape(layout, m, n, k)}).", nameof(batch));
        if (products.StrideA < 0 || products.StrideB < 0 || products.StrideC < 0 ||
            products.InnerStrideA < 0 || products.InnerStrideB < 0 || products.InnerStrideC < 0)
        {
            throw new ArgumentException($"Batch strides must not be negative, got {products} ({Shape(layout, m, n, k)}).", nameof(batch));
        }
        if (products.Total > MaxGridDimension)
            throw new ArgumentException($"Batch {products.Count}×{products.InnerCount} has more than {MaxGridDimension} products ({Shape(layout, m, n, k)}).", nameof(batch));
        // Products sharing one C would race.
        if ((products.Count > 1 && products.StrideC == 0) || (products.InnerCount > 1 && products.InnerStrideC == 0))
            throw new ArgumentException($"Batch {products.Count}×{products.InnerCount} writes every product to the same C (a C stride is 0) ({Shape(layout, m, n, k)}).", nameof(batch));

        var aNeeded = Extent(aRows, aColumns, lda, products.Count, products.StrideA, products.InnerCount, products.InnerStrideA);
        if (!Holds(a, aNeeded))
            Require.Holds(a, aNeeded, nameof(a), $"A [{aRows}, {aColumns}] ld {lda}{BatchShape(products)} ({Shape(layout, m, n, k)})");
        var bNeeded = Extent(bRows, bColumns, ldb, products.Count, products.StrideB, products.InnerCount, products.InnerStrideB);
        if (!Holds(b, bNeeded))
            Require.Holds(b, bNeeded, nameof(b), $"B [{bRows}, {bColumns}] ld {ldb}{BatchShape(products)} ({Shape(layout, m, n, k)})");
        var cNeeded = Extent(m, n, ldc, products.Count, products.StrideC, products.InnerCount, products.InnerStrideC);
        if (!Holds(c, cNeeded))
            Require.Holds(c, cNeeded, nameof(c), $"C [{m}, {n}] ld {ldc}{BatchShape(products)} ({Shape(layout, m, n, k)})");
        if (Require.Overlap(c, a))
            throw new ArgumentException($"C and A overlap ({Shape(layout, m, n, k)}); the product cannot be computed in place.", nameof(c));
        if (Require.Overlap(c, b))
            throw new ArgumentException($"C and B overlap ({Shape(layout, m, n, k)}); the product cannot be computed in place.", nameof(c));

        var bias = epilogue.Bias;
        if (epilogue.HasBias)
        {
            if (!Holds(bias, n))
                Require.Holds(bias, n, "bias", $"bias [{n}] ({Shape(layout, m, n, k)})");
            if (Require.Overlap(c, bias))
                throw new ArgumentException($"C and bias overlap ({Shape(layout, m, n, k)}); the product cannot be computed in place.", nameof(c));
        }
        else
        {
            // Never read then; C holds at least N elements, which keeps the argument valid everywhere.
            bias = c;
        }
        if (!Enum.IsDefined(epilogue.Activation))
            throw new ArgumentException($"Unknown activation {epilogue.Activation}.", nameof(epilogue));

        var (aRowStride, aDepthStride) = layout == MatmulLayout.TN ? (1, lda) : (lda, 1);
        var (bColumnStride, bDepthStride) = layout == MatmulLayout.NT ? (ldb, 1) : (1, ldb);
        return new LaunchArguments(
            new MatmulSizes
            {
                M = m,
                N = n,
                K = k,
                Lda = lda,
                Ldb = ldb,
                Ldc = ldc,
                ARowStride = aRowStride,
                ADepthStride = aDepthStride,
                BColumnStride = bColumnStride,
                BDepthStride = bDepthStride,
                Splits = 1,
                DepthChunk = k,
                ColumnRun = 1,
            },
            new MatmulBatchArgs
            {
                InnerCount = products.InnerCount,
                StrideA = products.StrideA,
                StrideB = products.StrideB,
                StrideC = products.StrideC,
                InnerStrideA = products.InnerStrideA,
                InnerStrideB = products.InnerStrideB,
                InnerStrideC = products.InnerStrideC,
            },
            new MatmulEpilogueArgs
            {
                Alpha = epilogue.Alpha,
                Accumulate = epilogue.Accumulate ? 1 : 0,
                HasBias = epilogue.HasBias ? 1 : 0,
                Activation = (int)epilogue.Activation,
            },
            bias,
            (int)products.Total);
    }

    private static string Shape(MatmulLayout layout, int m, int n, int k) => $"{layout} M={m} N={n} K={k}";

    private static string BatchShape(MatmulBatch products) =>
        products.Total == 1 ? "" : $" × batch {products.Count}×{products.InnerCount}";

    /// <summary>What <see cref="Require.Holds{T}"/> checks, without building its message.</summary>
    private static bool Holds(ArrayView<float> view, long needed) =>
        needed <= 0 || (view.IsValid && view.Length >= needed);

    /// <summary>One past the largest element index a batch of [rows, columns] matrices with row stride ld touches.</summary>
    private static long Extent(int rows, int columns, int ld, int count, long stride, int innerCount, long innerStride)
    {
        var matrix = (long)(rows - 1) * ld + columns;
        if (matrix > int.MaxValue)
            throw new ArgumentException($"A [{rows}, {columns}] matrix with row stride {ld} spans {matrix} elements; kernels index within a matrix with 32 bits.");
        return (count - 1) * stride + (innerCount - 1) * innerStride + matrix;
    }

    private readonly record struct LaunchArguments(MatmulSizes Sizes, MatmulBatchArgs Batch, MatmulEpilogueArgs Epilogue, ArrayView<float> Bias, int Products);

    // ------------------------------------------------------------------ kernels

    /// <summary>Version 1: one thread per output element; operands straight from global memory.</summary>
    private static void NaiveKernel(
        Index1D index,                  // z·M·N + row·N + column
        ArrayView<float> c,             // [M, ldc] per product
        ArrayView<float> a,             // [M, lda], or [K, lda] for TN, per product
        ArrayView<float> b,             // [K, ldb], or [N, ldb] for NT, per product
        ArrayView<float> bias,          // [N]
        MatmulSizes sizes,
        MatmulBatchArgs batch,
        MatmulEpilogueArgs epilogue)
    {
        var column = index % sizes.N;
        var rest = index / sizes.N;
        var row = rest % sizes.M;
        var (aBase, bBase, cBase) = batch.Offsets(rest / sizes.M);
        a = a.SubView(aBase);
        b = b.SubView(bBase);
        var sum = 0f;
        var aIndex = row * sizes.ARowStride;
        var bIndex = column * sizes.BColumnStride;
        for (var depth = 0; depth < sizes.K; depth++)
        {
            sum += a[aIndex] * b[bIndex];
            aIndex += sizes.ADepthStride;
            bIndex += sizes.BDepthStride;
        }
        new MatmulOutput(c.SubView(cBase), bias, sizes, epilogue).Store(row, column, sum);
    }

    /// <summary>
    /// The tiled kernel: group (bx, by, z) computes C[by·BM .. +BM, bx·BN .. +BN] of product z
    /// (of split z mod Splits when the depth is split: its partial product, to the scratch)
    /// with BN/TN × BM/TM threads; thread (tx, ty) accumulates rows ty + i·BM/TM and columns
    /// tx + j·BN/TN in <typeparamref name="TTile"/> registers.
    /// </summary>
    private static void TiledKernel<TShape, TLayout, TTile, TRow, TSteps>(
        ArrayView<float> c,             // [M, ldc] per product
        ArrayView<float> a,             // [M, lda], or [K, lda] for TN, per product
        ArrayView<float> b,             // [K, ldb], or [N, ldb] for NT, per product
        ArrayView<float> bias,          // [N]
        MatmulSizes sizes,
        MatmulBatchArgs batch,
        MatmulEpilogueArgs epilogue)
        where TShape : struct, IMatmulShape
        where TLayout : struct, IMatmulLayout
        where TTile : struct, IRegisterTile<TTile, TRow>
        where TRow : struct, IRegisterRow<TRow>
        where TSteps : struct, IDepthSteps
    {
        var shape = default(TShape);
        var layout = default(TLayout);
        var rows = shape.BlockRows;
        var columns = shape.BlockColumns;
        var depths = shape.BlockDepth;
        var bStride = columns + shape.BTilePad;
        // The A slice keeps A's layout ([BM, BK], or [BK, BM] for TN) so staging it never
        // transposes; the B slice is always [BK, BN(+pad)] so micro-tile rows read contiguous
        // words (NT transposes while staging).
        var aTile = SharedMemory.Allocate<float>(shape.BlockDepth * shape.BlockRows);
        var bTile = SharedMemory.Allocate<float>(shape.BlockDepth * (shape.BlockColumns + shape.BTilePad));

        var product = Grid.IdxZ / sizes.Splits;
        var split = Grid.IdxZ - product * sizes.Splits;
        var (aBase, bBase, cBase) = batch.Offsets(product);
        if (sizes.Splits > 1)
            cBase = (long)Grid.IdxZ * sizes.M * sizes.N;
        a = a.SubView(aBase);
        b = b.SubView(bBase);
        // Depths [depthBegin, depthEnd): whole slices but the last (a split's chunk is BK-aligned).
        var depthBegin = split * sizes.DepthChunk;
        var depthEnd = Math.Min(sizes.K, depthBegin + sizes.DepthChunk);
        var threadsX = columns / shape.ColumnsPerThread;
        var threadsY = rows / shape.RowsPerThread;
        var threads = threadsX * threadsY;
        var thread = Group.IdxY * threadsX + Group.IdxX;
        var alongX = shape.RowBlocksAlongX && sizes.RowBlocksAlongX != 0;
        var row0 = (alongX ? Grid.IdxX : Grid.IdxY) * rows;
        // A group computes a run of column blocks side by side (ColumnRun, 1 but on PoCL), each
        // depth slice of A against every block's B slice in turn: A's slice, read once from
        // memory, is reused from the cache by the run's other blocks.
        var run = shape.MaxColumnRun > 1 ? sizes.ColumnRun : 1;
        var runColumn0 = (alongX ? Grid.IdxY : Grid.IdxX) * columns * run;
        // A(r, d) for this thread's first row; next row, next depth.
        var aOffset = layout.TransposeA ? Group.IdxY : Group.IdxY * depths;
        var aStride = layout.TransposeA ? threadsY : threadsY * depths;
        var aStep = layout.TransposeA ? rows : 1;

        var accumulators = default(TTile);
        // The run's micro-tiles between their slices (PoCL keeps a work-item's private values
        // across a barrier in memory anyway), then the epilogue's input: through a private array
        // and a runtime loop, so the epilogue (activation switch with erf and tanh) is compiled
        // once rather than once per register.
        var tileFloats = shape.RowsPerThread * shape.ColumnsPerThread;
        var results = LocalMemory.Allocate<float>(shape.MaxColumnRun * shape.RowsPerThread * shape.ColumnsPerThread);
        // A's rows straight from global memory (PoCL's shape, A not transposed, every row of the
        // block inside M, K a multiple of the unrolled steps so no run reads past a row): no copy.
        var directA = shape.PrivateARows && !layout.TransposeA && row0 + rows <= sizes.M && sizes.K % default(TSteps).Count == 0;
        var aRow = (row0 + Group.IdxY) * sizes.Lda;
        var aRowStride = threadsY * sizes.Lda;
        for (var depth0 = depthBegin; depth0 < depthEnd; depth0 += depths)
        {
            // Only the depths the steps below read are staged: the slice's valid ones rounded up to
            // whole runs of steps (the last one zero-filled), so a product shallower than BK (PoCL:
            // attention's K = head size 32 of a 128-deep slice) copies no rows that nothing reads.
            var staged = Math.Min(depths, (depthEnd - depth0 + default(TSteps).Count - 1) / default(TSteps).Count * default(TSteps).Count);
            // The A slice serves the whole run: the barrier after the first B slice covers it, and
            // the last block's closing barrier comes before the next depth's copy.
            if (layout.TransposeA)
                Stage<TShape>(aTile, rows, 1, a, sizes.Lda, depth0, depthEnd, staged, row0, sizes.M, rows, thread, threads);
            else if (!directA)
                Stage<TShape>(aTile, depths, 1, a, sizes.Lda, row0, sizes.M, rows, depth0, depthEnd, staged, thread, threads);
            for (var block = 0; block < run; block++)
            {
                var column0 = runColumn0 + block * columns;
                if (column0 >= sizes.N)
                    break;
                if (layout.TransposeB)
                    Stage<TShape>(bTile, 1, bStride, b, sizes.Ldb, column0, sizes.N, columns, depth0, depthEnd, staged, thread, threads);
                else
                    Stage<TShape>(bTile, bStride, 1, b, sizes.Ldb, depth0, depthEnd, staged, column0, sizes.N, columns, thread, threads);
                Group.Barrier();

                if (shape.MaxColumnRun > 1)
                {
                    if (depth0 == depthBegin)
                        accumulators = default;
                    else
                        accumulators.Restore(results, block * tileFloats);
                }

                // One iteration on GPU shapes (TSteps covers BK). On PoCL (BK > TSteps) the loop
                // also skips the zero-filled steps past K, and it must stay a loop: PoCL would
                // vectorise a loop-free region across work-items, with gathers. The break (an early
                // exit) matters too: with a computable trip count instead (d < min(BK, K − depth0))
                // LLVM's loop vectoriser vectorised the depth loop itself, with gathers, 3× slower.
                // Two loops rather than one over a chosen view: A in global memory and the staged slice
                // live in different OpenCL address spaces, and PoCL has no generic one to merge them.
                if (directA)
                {
                    for (var d = 0; d < depths; d += default(TSteps).Count)
                    {
                        if (depth0 + d >= depthEnd)
                            break;
                        default(TSteps).Run<TTile, TRow>(
                            ref accumulators,
                            a, aRow + depth0 + d, 1, aRowStride,
                            bTile, Group.IdxX + d * bStride, bStride, threadsX);
                    }
                }
                else
                {
                    for (var d = 0; d < depths; d += default(TSteps).Count)
                    {
                        if (depth0 + d >= depthEnd)
                            break;
                        default(TSteps).Run<TTile, TRow>(
                            ref accumulators,
                            aTile, aOffset + d * aStep, aStep, aStride,
                            bTile, Group.IdxX + d * bStride, bStride, threadsX);
                    }
                }
                if (shape.MaxColumnRun > 1)
                    accumulators.Spill(results, block * tileFloats);
                Group.Barrier();
            }
        }

        if (shape.MaxColumnRun == 1)
            accumulators.Spill(results, 0);
        var output = new MatmulOutput(c.SubView(cBase), bias, sizes, epilogue);
        for (var block = 0; block < run; block++)
        {
            output.StoreTile(
                results.SubView(block * tileFloats), shape.RowsPerThread, shape.ColumnsPerThread,
                row0 + Group.IdxY, threadsY, runColumn0 + block * columns + Group.IdxX, threadsX);
        }
    }

    /// <summary>
    /// Copies the [outerSize, innerSize] block at (outer0, inner0) of a row-major operand with
    /// row stride <paramref name="ld"/> to tile[o·outerStride + i·innerStride], zero outside
    /// [outerLimit, innerLimit). Up to <see cref="IMatmulShape.StageLanes"/> neighbouring
    /// threads split the contiguous (inner) dimension, the others the outer one.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Stage<TShape>(
        ArrayView<float> tile, int outerStride, int innerStride,
        ArrayView<float> source, int ld,
        int outer0, int outerLimit, int outerSize,
        int inner0, int innerLimit, int innerSize,
        int thread, int threads)
        where TShape : struct, IMatmulShape
    {
        var lanes = Math.Min(default(TShape).StageLanes, innerSize);
        var outerThreads = threads / lanes;
        // An interior block (every block of a product whose sizes are multiples of the tile's)
        // copies without a bounds check per element: on PoCL those checks, vectorised across the
        // work-items, were a third of the instructions of a training step's products.
        if (outer0 + outerSize <= outerLimit && inner0 + innerSize <= innerLimit)
        {
            if (lanes == 1 && innerStride == 1)
            {
                // PoCL (one work-item per row). With the constant bound innerSize LLVM unrolled
                // the copy fully and kept it scalar (a load may not pass a store to memory it
                // cannot prove distinct); with a bound it cannot compute (equal to innerSize in
                // an interior block) its loop vectoriser widens the copy behind a runtime
                // overlap check.
                var count = Math.Min(innerSize, innerLimit - inner0);
                for (var o = thread; o < outerSize; o += threads)
                {
                    var from = (outer0 + o) * ld + inner0;
                    var to = o * outerStride;
                    for (var i = 0; i < count; i++)
                        tile[to + i] = source[from + i];
                }
                return;
            }
            for (var o = thread / lanes; o < outerSize; o += outerThreads)
            {
                var row = (outer0 + o) * ld + inner0;
                for (var i = thread % lanes; i < innerSize; i += lanes)
                    tile[o * outerStride + i * innerStride] = source[row + i];
            }
            return;
        }
        for (var o = thread / lanes; o < outerSize; o += outerThreads)
        {
            var outer = outer0 + o;
            var outerInside = outer < outerLimit;
            for (var i = thread % lanes; i < innerSize; i += lanes)
            {
                var inner = inner0 + i;
                var value = 0f;
                if (outerInside && inner < innerLimit)
                    value = source[outer * ld + inner];
                tile[o * outerStride + i * innerStride] = value;
            }
        }
    }

    /// <summary>
    /// The warp-tiled kernel for GPUs (version 3): group (bx, by, z) computes
    /// C[by·BM .. +BM, bx·BN .. +BN] of product z (of split z mod Splits when the depth is
    /// split). See the class remarks; <typeparamref name="TAccess"/> says whether global loads
    /// and stores may be 128-bit (every row 16-byte aligned, checked at launch).
    /// </summary>
    private static void WarpTiledKernel<TShape, TLayout, TAccess>(
        ArrayView<float> c,             // [M, ldc] per product; split-K: partials [products·splits, M, N]
        ArrayView<float> a,             // [M, lda], or [K, lda] for TN, per product
        ArrayView<float> b,             // [K, ldb], or [N, ldb] for NT, per product
        ArrayView<float> bias,          // [N]
        MatmulSizes sizes,
        MatmulBatchArgs batch,
        MatmulEpilogueArgs epilogue)
        where TShape : struct, IWarpTiledShape
        where TLayout : struct, IMatmulLayout
        where TAccess : struct, IGlobalAccess
    {
        var shape = default(TShape);
        var depths = WarpTiles.Depth;
        // Slices in shared memory, two of each: [2][BK][BM + 4] and [2][BK][BN + 4] floats, rows
        // of Float4 so reads are 128-bit; the 4-float pad keeps the transposing stores of the
        // staging conflict-free.
        var aRow = (shape.BlockRows + WarpTiles.Pad) / 4;      // Float4s per row of the A slice
        var bRow = (shape.BlockColumns + WarpTiles.Pad) / 4;
        var aSlices = SharedMemory.Allocate<Float4>(2 * depths * aRow);
        var bSlices = SharedMemory.Allocate<Float4>(2 * depths * bRow);

        var product = Grid.IdxZ / sizes.Splits;
        var split = Grid.IdxZ - product * sizes.Splits;
        var (aBase, bBase, cBase) = batch.Offsets(product);
        if (sizes.Splits > 1)
            cBase = (long)Grid.IdxZ * sizes.M * sizes.N;
        a = a.SubView(aBase);
        b = b.SubView(bBase);
        var depthBegin = split * sizes.DepthChunk;
        var depthEnd = Math.Min(sizes.K, depthBegin + sizes.DepthChunk);
        var row0 = Grid.IdxY * shape.BlockRows;
        var column0 = Grid.IdxX * shape.BlockColumns;

        // Lane (laneRow, laneColumn) of warp (warpRow, warpColumn) owns rows
        // warpRow·64 + laneRow·4 + {0..3, 32..35} and columns warpColumn·32 + laneColumn·4 + {0..3, 16..19}.
        var warp = Group.IdxX / WarpTiles.Lanes;
        var lane = Group.IdxX - warp * WarpTiles.Lanes;
        var warpRow = warp / shape.WarpsAcross;
        var rowInBlock = warpRow * WarpTiles.WarpRows + (lane / WarpTiles.LanesAcross) * 4;
        var columnInBlock = (warp - warpRow * shape.WarpsAcross) * WarpTiles.WarpColumns + (lane % WarpTiles.LanesAcross) * 4;

        var staging = new WarpTileStaging<TShape, TLayout, TAccess>(a, b, sizes, row0, column0, Group.IdxX);
        var body = new WarpTileStep
        {
            ASlices = aSlices,
            BSlices = bSlices,
            ARow = aRow,
            BRow = bRow,
            AGroup = rowInBlock / 4,
            BGroup = columnInBlock / 4,
        };
        staging.Load(depthBegin, depthEnd);
        staging.Store(aSlices, bSlices, 0);
        Group.Barrier();
        var buffer = 0;
        for (var depth0 = depthBegin; depth0 < depthEnd; depth0 += depths)
        {
            // The next slice's global loads go out before this slice's multiply-adds hide them;
            // they land in the other buffer, which every thread finished reading before the
            // barrier that ended the previous slice.
            var more = depth0 + depths < depthEnd;
            if (more)
                staging.Load(depth0 + depths, depthEnd);
            body.Buffer = buffer;
            default(S8).Run(ref body, 0);
            if (more)
                staging.Store(aSlices, bSlices, 1 - buffer);
            Group.Barrier();
            buffer = 1 - buffer;
        }

        var store = new WarpTileStore<TAccess>(new MatmulOutput(c.SubView(cBase), bias, sizes, epilogue));
        var row = row0 + rowInBlock;
        var column = column0 + columnInBlock;
        body.Low.Visit(ref store, row, 1, column, WarpTiles.HalfColumns / 4);
        body.High.Visit(ref store, row + WarpTiles.WarpRows / 2, 1, column, WarpTiles.HalfColumns / 4);
    }

    /// <summary>
    /// Split-K, second pass: C(row, column) = epilogue(Σₛ partials[product, s, row, column])
    /// in split order, one thread per element of every product (deterministic, no atomics).
    /// </summary>
    private static void SplitSumKernel(
        Index1D index,                  // product·M·N + row·N + column
        ArrayView<float> c,             // [M, ldc] per product
        ArrayView<float> partials,      // [products, splits, M, N]
        ArrayView<float> bias,          // [N]
        MatmulSizes sizes,
        MatmulBatchArgs batch,
        MatmulEpilogueArgs epilogue)
    {
        var matrix = sizes.M * sizes.N;
        int element = index;
        var product = element / matrix;
        var inside = element - product * matrix;
        var row = inside / sizes.N;
        var column = inside - row * sizes.N;
        var sum = 0f;
        var partial = (long)product * sizes.Splits * matrix + inside;
        for (var split = 0; split < sizes.Splits; split++)
            sum += partials[partial + (long)split * matrix];
        new MatmulOutput(c.SubView(batch.Offsets(product).C), bias, sizes, epilogue).Store(row, column, sum);
    }

    /// <summary>Columns of the source <see cref="TransposeKernel"/>'s work-items copy: 8 target rows, as many lines as L1 has ways.</summary>
    private const int TransposeColumns = 8;

    /// <summary>Rows of the source a work-item of <see cref="TransposeKernel"/> copies.</summary>
    private const int TransposeRows = 64;

    /// <summary>Work-items of a <see cref="TransposeKernel"/> group, all along y (PoCL vectorises a group's loop along x).</summary>
    private const int TransposeGroup = 16;

    /// <summary>Fewest elements (K·min(M, N) for TN, K·N for NT) of the operand a single product on PoCL transposes before running as NN.</summary>
    internal const long TransposeMinimumElements = 1L << 16;

    /// <summary>
    /// target[c, r] = source[r, c] for r &lt; rows, c &lt; columns: work-item (0, y) of group
    /// (x, 0) copies source rows x·64 .. +64 of columns y·8 .. +8, reading 8 contiguous words of a
    /// row at a time and writing them down 8 target rows (a CPU kernel).
    /// </summary>
    private static void TransposeKernel(
        ArrayView<float> target,        // [columns, rows]
        ArrayView<float> source,        // [rows, ld]
        int rows, int columns, int ld)
    {
        var row0 = Grid.IdxX * TransposeRows;
        var column0 = (Grid.IdxY * Group.DimY + Group.IdxY) * TransposeColumns;
        if (column0 >= columns)
            return;
        var rowEnd = Math.Min(row0 + TransposeRows, rows);
        var columnEnd = Math.Min(column0 + TransposeColumns, columns);
        for (var r = row0; r < rowEnd; r++)
        {
            for (var c = column0; c < columnEnd; c++)
                target[(long)c * rows + r] = source[(long)r * ld + c];
        }
    }

    /// <summary>
    /// Version 4, the few-rows product (NT only): thread (column, product) computes column
    /// <c>column</c> of every row of C as dot products of B's contiguous row with A's rows.
    /// Nothing is staged and there is no barrier: on PoCL a group is a plain loop over its
    /// columns, and each dot product runs <see cref="FewRowsLanes"/> independent partial sums
    /// over neighbouring depths (written out, since ILGPU does not unroll loops), so the
    /// multiply-adds do not wait on one another and LLVM's SLP vectoriser may pack them (not
    /// checked in PoCL's output). B is read once per row of A, so it suits M of a few.
    /// </summary>
    private static void FewRowsKernel(
        ArrayView<float> c,             // [M, ldc] per product
        ArrayView<float> a,             // [M, lda] per product
        ArrayView<float> b,             // [N, ldb] per product
        ArrayView<float> bias,          // [N]
        MatmulSizes sizes,
        MatmulBatchArgs batch,
        MatmulEpilogueArgs epilogue)
    {
        var column = Grid.IdxX * Group.DimX + Group.IdxX;
        if (column >= sizes.N)
            return;
        var (aBase, bBase, cBase) = batch.Offsets(Grid.IdxY);
        var weights = b.SubView(bBase + (long)column * sizes.Ldb, sizes.K);
        var output = new MatmulOutput(c.SubView(cBase), bias, sizes, epilogue);
        for (var row = 0; row < sizes.M; row++)
            output.Store(row, column, Dot(a.SubView(aBase + (long)row * sizes.Lda, sizes.K), weights, sizes.K));
    }

    /// <summary>Σ x[d]·y[d] over d &lt; k: eight partial sums over neighbouring depths, added pairwise, then the ragged tail.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Dot(ArrayView<float> x, ArrayView<float> y, int k)
    {
        float s0 = 0f, s1 = 0f, s2 = 0f, s3 = 0f, s4 = 0f, s5 = 0f, s6 = 0f, s7 = 0f;
        var depth = 0;
        for (; depth + FewRowsLanes <= k; depth += FewRowsLanes)
        {
            s0 += x[depth] * y[depth];
            s1 += x[depth + 1] * y[depth + 1];
            s2 += x[depth + 2] * y[depth + 2];
            s3 += x[depth + 3] * y[depth + 3];
            s4 += x[depth + 4] * y[depth + 4];
            s5 += x[depth + 5] * y[depth + 5];
            s6 += x[depth + 6] * y[depth + 6];
            s7 += x[depth + 7] * y[depth + 7];
        }
        var sum = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7));
        for (; depth < k; depth++)
            sum += x[depth] * y[depth];
        return sum;
    }

    /// <summary>The layout instantiations of the tiled kernel for one tile, and its launch geometry.</summary>
    /// <param name="Kernels">By layout (NN, NT, TN); scalar global loads, any alignment.</param>
    /// <param name="AlignedKernels">By layout: 128-bit global loads for aligned operands (null entries: the tile has none).</param>
    /// <param name="BlockRows">BM.</param>
    /// <param name="BlockColumns">BN.</param>
    /// <param name="BlockDepth">BK, the depth of a staged slice.</param>
    /// <param name="Group">Threads of a group.</param>
    /// <param name="Specialization">Launch bounds the kernels are loaded with.</param>
    /// <param name="SplitsDepth">Whether the kernels take split-K launches.</param>
    /// <param name="RowBlocksAlongX">Whether the grid's x runs down the row blocks (<see cref="IMatmulShape.RowBlocksAlongX"/>).</param>
    /// <param name="RunsAsNN">Whether single TN and NT products transpose an operand and run as NN (PoCL's shape, whose NN kernel reads A's rows in place and stages B's slices untransposed).</param>
    /// <param name="MaxColumnRun">The most column blocks a group computes side by side (<see cref="IMatmulShape.MaxColumnRun"/>).</param>
    private sealed record TiledKernels(
        IReadOnlyList<TiledKernel> Kernels,
        IReadOnlyList<TiledKernel?> AlignedKernels,
        int BlockRows,
        int BlockColumns,
        int BlockDepth,
        Index3D Group,
        KernelSpecialization Specialization,
        bool SplitsDepth,
        bool RowBlocksAlongX = false,
        bool RunsAsNN = false,
        int MaxColumnRun = 1)
    {
        public int ThreadsPerGroup => Group.Size;

        /// <summary>Whether a product of this layout and width runs its row blocks along the grid's x.</summary>
        public bool RowBlocksAlongXFor(MatmulLayout layout, int n) =>
            RowBlocksAlongX && layout != MatmulLayout.TN && n >= RowBlocksAlongXMinimumColumns;

        /// <summary>The launch grid: column blocks along x and row blocks along y, or the other way round.</summary>
        public static Index3D Grid(bool rowBlocksAlongX, int blocksAcross, int blocksDown, int products) =>
            rowBlocksAlongX ? new Index3D(blocksDown, blocksAcross, products) : new Index3D(blocksAcross, blocksDown, products);

        public static TiledKernels For(MatmulTile tile) => tile switch
        {
            MatmulTile.Tile16x16 => Of<Shape16x16, M4x4, R4, S16>(),
            MatmulTile.Tile32x32 => Of<Shape32x32, M4x4, R4, S16>(),
            MatmulTile.Tile64x64 => Of<Shape64x64, M4x4, R4, S16>(),
            MatmulTile.Tile128x128 => WarpTiled<Warps128x128>(),
            MatmulTile.Cpu128x32 => Of<ShapeCpu128x32, M4x32, R32, S2>(
                transposedA: TiledKernel<ShapeCpu128x32, LayoutTN, M4x32Unfused, R32Unfused, S2>),
            _ => throw new ArgumentOutOfRangeException(nameof(tile), tile, "Unknown matmul tile."),
        };

        /// <param name="transposedA">The TN kernel, where it differs from the others' instantiation.</param>
        private static TiledKernels Of<TShape, TTile, TRow, TSteps>(TiledKernel? transposedA = null)
            where TShape : struct, IMatmulShape
            where TTile : struct, IRegisterTile<TTile, TRow>
            where TRow : struct, IRegisterRow<TRow>
            where TSteps : struct, IDepthSteps
        {
            var shape = default(TShape);
            if (default(TTile).Rows != shape.RowsPerThread || default(TRow).Length != shape.ColumnsPerThread ||
                shape.BlockRows % shape.RowsPerThread != 0 || shape.BlockColumns % shape.ColumnsPerThread != 0 ||
                shape.BlockDepth % default(TSteps).Count != 0)
            {
                throw new InvalidOperationException($"{typeof(TShape).Name}: registers or depth steps do not match the shape.");
            }
            return new TiledKernels(
                [
                    TiledKernel<TShape, LayoutNN, TTile, TRow, TSteps>,
                    TiledKernel<TShape, LayoutNT, TTile, TRow, TSteps>,
                    transposedA ?? TiledKernel<TShape, LayoutTN, TTile, TRow, TSteps>,
                ],
                [null, null, null],
                shape.BlockRows,
                shape.BlockColumns,
                shape.BlockDepth,
                new Index3D(shape.BlockColumns / shape.ColumnsPerThread, shape.BlockRows / shape.RowsPerThread, 1),
                KernelSpecialization.Empty,
                SplitsDepth: true,
                shape.RowBlocksAlongX,
                RunsAsNN: shape.PrivateARows,
                MaxColumnRun: shape.MaxColumnRun);
        }

        private static TiledKernels WarpTiled<TShape>()
            where TShape : struct, IWarpTiledShape
        {
            var shape = default(TShape);
            var threads = shape.WarpsDown * shape.WarpsAcross * WarpTiles.Lanes;
            // Staging gives every thread exactly one 128-bit slot of each slice.
            if (shape.BlockRows * WarpTiles.Depth / 4 != threads || shape.BlockColumns * WarpTiles.Depth / 4 != threads)
                throw new InvalidOperationException($"{typeof(TShape).Name}: a slice is not one 128-bit slot per thread.");
            return new TiledKernels(
                [
                    WarpTiledKernel<TShape, LayoutNN, ScalarAccess>,
                    WarpTiledKernel<TShape, LayoutNT, ScalarAccess>,
                    WarpTiledKernel<TShape, LayoutTN, ScalarAccess>,
                ],
                [
                    WarpTiledKernel<TShape, LayoutNN, VectorAccess>,
                    WarpTiledKernel<TShape, LayoutNT, VectorAccess>,
                    WarpTiledKernel<TShape, LayoutTN, VectorAccess>,
                ],
                shape.BlockRows,
                shape.BlockColumns,
                WarpTiles.Depth,
                new Index3D(threads, 1, 1),
                // 256 threads, two groups per multiprocessor: ptxas keeps it within 128 registers.
                new KernelSpecialization(threads, shape.MinGroupsPerMultiprocessor),
                SplitsDepth: true);
        }
    }
}

/// <summary>Sizes and leading dimensions of one product, as a kernel parameter.</summary>
internal struct MatmulSizes
{
    public int M;
    public int N;
    public int K;
    public int Lda;
    public int Ldb;
    public int Ldc;

    // Element strides of A(row, depth) and B(depth, column) whatever the layout (naive kernel).
    public int ARowStride;
    public int ADepthStride;
    public int BColumnStride;
    public int BDepthStride;

    // Split-K (warp-tiled and tiled kernels): grid z = product·Splits + split, split s covers depths
    // [s·DepthChunk, (s+1)·DepthChunk) and writes C at (z·M·N) with Ldc = N. 1 and K otherwise.
    public int Splits;
    public int DepthChunk;

    // 1: the grid's x runs down the row blocks, y across the column blocks (tiled kernel, where
    // the shape allows it; see IMatmulShape.RowBlocksAlongX); 0: the other way round.
    public int RowBlocksAlongX;

    // 1: the kernel computes Cᵀ (M and N swapped): element (row, column) goes to C[column, row]
    // with bias[row] (the tiled kernel and the split sum: PoCL's TN products through Bᵀ); 0 otherwise.
    public int TransposedC;

    // Column blocks a group of the tiled kernel computes side by side (≤ IMatmulShape.MaxColumnRun):
    // the grid has ⌈blocks across / ColumnRun⌉ groups across.
    public int ColumnRun;
}

/// <summary>Two-level batch strides, as a kernel parameter.</summary>
internal struct MatmulBatchArgs
{
    public int InnerCount;
    public long StrideA;
    public long StrideB;
    public long StrideC;
    public long InnerStrideA;
    public long InnerStrideB;
    public long InnerStrideC;

    /// <summary>Element offsets of A, B, C for product z = b1·InnerCount + b2.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly (long A, long B, long C) Offsets(int z)
    {
        var outer = z / InnerCount;
        var inner = z - outer * InnerCount;
        return (outer * StrideA + inner * InnerStrideA, outer * StrideB + inner * InnerStrideB, outer * StrideC + inner * InnerStrideC);
    }
}

/// <summary>The epilogue as runtime uniforms: one kernel serves every combination.</summary>
internal struct MatmulEpilogueArgs
{
    public float Alpha;
    public int Accumulate;
    public int HasBias;
    public int Activation;

    /// <summary>C = P: what split-K partials are written with.</summary>
    public static MatmulEpilogueArgs Plain => new() { Alpha = 1f };
}

/// <summary>How a kernel writes C: bounds guard and fused epilogue.</summary>
internal readonly struct MatmulOutput(ArrayView<float> c, ArrayView<float> bias, MatmulSizes sizes, MatmulEpilogueArgs epilogue)
{
    private readonly ArrayView<float> c = c;
    private readonly ArrayView<float> bias = bias;
    private readonly int m = sizes.M;
    private readonly int n = sizes.N;
    private readonly int ldc = sizes.Ldc;
    private readonly bool transposed = sizes.TransposedC != 0;
    private readonly MatmulEpilogueArgs epilogue = epilogue;

    /// <summary>C(row, column) = act(alpha·sum + (accumulate ? C : 0) + bias[column]); nothing outside [M, N]. Transposed (<see cref="MatmulSizes.TransposedC"/>): C[column, row] with bias[row].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Store(int row, int column, float sum)
    {
        if (row < m && column < n)
        {
            if (transposed)
                StoreInside(column * ldc + row, row, sum, activate: true);
            else
                StoreInside(row * ldc + column, column, sum, activate: true);
        }
    }

    /// <summary>
    /// Stores a [rows, columns] micro-tile (row-major in <paramref name="tile"/>) at
    /// C(row0 + i·rowStride, column0 + j·columnStride). Without an activation the loop has no
    /// activation switch, so a CPU compiler vectorises it. With <see cref="MatmulSizes.TransposedC"/>
    /// element (row, column) goes to C[column, row] with bias[row].
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void StoreTile(ArrayView<float> tile, int rows, int columns, int row0, int rowStride, int column0, int columnStride)
    {
        if (transposed)
            StoreTransposedTile(tile, rows, columns, row0, rowStride, column0, columnStride);
        else if (epilogue.Activation == (int)Activation.None)
            StoreTile(tile, rows, columns, row0, rowStride, column0, columnStride, activate: false);
        else
            StoreTile(tile, rows, columns, row0, rowStride, column0, columnStride, activate: true);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void StoreTile(ArrayView<float> tile, int rows, int columns, int row0, int rowStride, int column0, int columnStride, bool activate)
    {
        for (var i = 0; i < rows; i++)
        {
            var row = row0 + i * rowStride;
            if (row >= m)
                break;
            for (var j = 0; j < columns; j++)
            {
                var column = column0 + j * columnStride;
                if (column < n)
                    StoreInside(row * ldc + column, column, tile[i * columns + j], activate);
            }
        }
    }

    /// <summary>
    /// The tile column by column, so that consecutive stores run along a row of C (element (row,
    /// column) is C[column, row]): a weight gradient, written once per product, so through
    /// <see cref="Store"/> with its activation switch.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void StoreTransposedTile(ArrayView<float> tile, int rows, int columns, int row0, int rowStride, int column0, int columnStride)
    {
        for (var j = 0; j < columns; j++)
        {
            for (var i = 0; i < rows; i++)
                Store(row0 + i * rowStride, column0 + j * columnStride, tile[i * columns + j]);
        }
    }

    /// <summary>
    /// C(row, column + e) for e &lt; 4 = epilogue(sum[e]); nothing outside [M, N]. With
    /// <typeparamref name="TAccess"/> vector access (C, bias and ldc 16-byte aligned, checked at
    /// launch) four inside columns go out as one 128-bit store.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Store4<TAccess>(int row, int column, Float4 sum)
        where TAccess : struct, IGlobalAccess
    {
        if (row >= m)
            return;
        if (default(TAccess).Vector && column + 3 < n)
        {
            var index = row * ldc + column;
            var value = sum;
            value.Scale(epilogue.Alpha);
            if (epilogue.Accumulate != 0)
                value = Add(value, c.Cast<Float4>().AsAligned(16)[index / 4]);
            if (epilogue.HasBias != 0)
                value = Add(value, bias.Cast<Float4>().AsAligned(16)[column / 4]);
            if (epilogue.Activation != (int)Activation.None)
                value = new Float4(Activate(epilogue.Activation, value.X), Activate(epilogue.Activation, value.Y), Activate(epilogue.Activation, value.Z), Activate(epilogue.Activation, value.W));
            c.Cast<Float4>().AsAligned(16)[index / 4] = value;
            return;
        }
        Store(row, column, sum.X);
        Store(row, column + 1, sum.Y);
        Store(row, column + 2, sum.Z);
        Store(row, column + 3, sum.W);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Float4 Add(Float4 x, Float4 y) => new(x.X + y.X, x.Y + y.Y, x.Z + y.Z, x.W + y.W);

    // A call, not inlined: the warp-tiled kernel stores 64 values per thread, and 64 inlined
    // copies of erf and tanh would only bloat the code around the product loop.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static float Activate(int activation, float x) => ActivationFunctions.Apply(activation, x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void StoreInside(int index, int biasIndex, float sum, bool activate)
    {
        var value = epilogue.Alpha * sum;
        if (epilogue.Accumulate != 0)
            value += c[index];
        if (epilogue.HasBias != 0)
            value += bias[biasIndex];
        c[index] = activate ? ActivationFunctions.Apply(epilogue.Activation, value) : value;
    }
}

/// <summary>A block shape of the tiled kernel: compile-time constants of one instantiation.</summary>
internal interface IMatmulShape
{
    /// <summary>BM: rows of C per group.</summary>
    int BlockRows { get; }

    /// <summary>BN: columns of C per group.</summary>
    int BlockColumns { get; }

    /// <summary>BK: depth of the A and B slices staged between two barriers.</summary>
    int BlockDepth { get; }

    /// <summary>TM: rows of a thread's register micro-tile.</summary>
    int RowsPerThread { get; }

    /// <summary>TN: columns of a thread's register micro-tile.</summary>
    int ColumnsPerThread { get; }

    /// <summary>How many neighbouring threads split a contiguous row when staging a slice.</summary>
    int StageLanes { get; }

    /// <summary>Padding after each BN-row of the B slice (avoids bank conflicts when NT transposes into it).</summary>
    int BTilePad { get; }

    /// <summary>
    /// Whether each thread's A rows are its own (no other thread reads them), so that an A not
    /// stored transposed can be read from global memory instead of staged: the CPU shape.
    /// </summary>
    bool PrivateARows { get; }

    /// <summary>
    /// Whether the grid's x may run down the row blocks (y across the column blocks), so that
    /// consecutive groups share one B slice: PoCL runs groups in x order, and a B slice of 32
    /// columns is staged from rows a whole row of B apart (a page each at n = 2048). The
    /// launcher asks for it (<see cref="MatmulSizes.RowBlocksAlongX"/>) where that pays: A not
    /// transposed (a TN's staged A slice is the one worth sharing) and at least
    /// <see cref="MatmulKernels.RowBlocksAlongXMinimumColumns"/> columns.
    /// </summary>
    bool RowBlocksAlongX { get; }

    /// <summary>
    /// The most column blocks one group computes side by side (<see cref="MatmulSizes.ColumnRun"/>):
    /// 1, or on PoCL a run whose blocks reuse each depth slice of A from the cache.
    /// </summary>
    int MaxColumnRun { get; }
}

/// <summary>16×16 block, 4×4 micro-tiles, 16 threads: the simulator (a barrier costs µs per thread).</summary>
internal struct Shape16x16 : IMatmulShape
{
    public readonly int BlockRows => 16;
    public readonly int BlockColumns => 16;
    public readonly int BlockDepth => 16;
    public readonly int RowsPerThread => 4;
    public readonly int ColumnsPerThread => 4;
    public readonly int StageLanes => 16;
    public readonly int BTilePad => 4;
    public readonly bool PrivateARows => false;
    public readonly bool RowBlocksAlongX => false;
    public readonly int MaxColumnRun => 1;
}

/// <summary>32×32 block, 4×4 micro-tiles, 64 threads.</summary>
internal struct Shape32x32 : IMatmulShape
{
    public readonly int BlockRows => 32;
    public readonly int BlockColumns => 32;
    public readonly int BlockDepth => 16;
    public readonly int RowsPerThread => 4;
    public readonly int ColumnsPerThread => 4;
    public readonly int StageLanes => 32;
    public readonly int BTilePad => 4;
    public readonly bool PrivateARows => false;
    public readonly bool RowBlocksAlongX => false;
    public readonly int MaxColumnRun => 1;
}

/// <summary>64×64 block, 4×4 micro-tiles, 256 threads, BK 16.</summary>
internal struct Shape64x64 : IMatmulShape
{
    public readonly int BlockRows => 64;
    public readonly int BlockColumns => 64;
    public readonly int BlockDepth => 16;
    public readonly int RowsPerThread => 4;
    public readonly int ColumnsPerThread => 4;
    public readonly int StageLanes => 32;
    public readonly int BTilePad => 4;
    public readonly bool PrivateARows => false;
    public readonly bool RowBlocksAlongX => false;
    public readonly int MaxColumnRun => 1;
}

/// <summary>
/// PoCL: 128×32 block of 1×32 work-items, each with a contiguous 4×32 micro-tile (16 AVX
/// registers of accumulators), BK 128 run as a loop over 2 unrolled steps. Work-items copy
/// whole rows when staging (StageLanes 1) so the copies vectorise; all 32 share the staged B
/// slice, which halves the per-FLOP cost of staging (NT transposes it) against a 64-row block.
/// A work-item's 4 A rows are its own, so an A stored untransposed is read from global memory
/// in interior row blocks instead of copied (PrivateARows: SGEMM 2048 126 → 139 GFLOP/s).
/// Two steps, not eight: LLVM (skylake-avx512, 256-bit vectors) loads all B rows of an
/// unrolled run up front, and eight steps' 32 ymm rows beside 16 accumulators spilled to the
/// stack inside the loop; two steps measured 1.2–1.3× faster (bench/results/2026-12-06-pocl-sgemm-vs-openblas.md).
/// NN and NT products with N ≥ 1024 run row blocks along the grid's x (RowBlocksAlongX): NN 2048
/// ~115 → ~130 GFLOP/s in alternating runs, the B staging's stalls in perf annotate 33 → 18 % of
/// the kernel. Single TN products run as NN through a transposed copy of the narrower operand
/// (the LM head's weight gradient 81–106 → 126–135 GFLOP/s, the reference training step 10–12 %
/// faster: bench/results/2026-12-06-training-step-vs-pytorch-cpu-tn.md); the TN kernel, left
/// to batched products (attention's dV), multiplies and adds unfused (Reg1Unfused). Single NT
/// products of two or more row blocks run as NN through Bᵀ too, and a group computes a run of up
/// to 8 column blocks (<see cref="KernelTuning.MatmulColumnRun"/>), each depth slice of A against
/// every block's B slice in turn with the micro-tiles kept in a private array between slices:
/// A's slice comes from memory once per run (in alternating rounds SGEMM 2048 ~146 → ~177 GFLOP/s;
/// the FFN's [2048 × 256] · [1024 × 256]ᵀ forward ~125 → ~155 through Bᵀ).
/// </summary>
internal struct ShapeCpu128x32 : IMatmulShape
{
    public readonly int BlockRows => 128;
    public readonly int BlockColumns => 32;
    public readonly int BlockDepth => 128;
    public readonly int RowsPerThread => 4;
    public readonly int ColumnsPerThread => 32;
    public readonly int StageLanes => 1;
    public readonly int BTilePad => 0;
    public readonly bool PrivateARows => true;
    public readonly bool RowBlocksAlongX => true;
    public readonly int MaxColumnRun => 8;
}

/// <summary>Which operands are stored transposed (compile-time, so each layout stages coalesced).</summary>
internal interface IMatmulLayout
{
    bool TransposeA { get; }

    bool TransposeB { get; }
}

internal struct LayoutNN : IMatmulLayout
{
    public readonly bool TransposeA => false;
    public readonly bool TransposeB => false;
}

internal struct LayoutNT : IMatmulLayout
{
    public readonly bool TransposeA => false;
    public readonly bool TransposeB => true;
}

internal struct LayoutTN : IMatmulLayout
{
    public readonly bool TransposeA => true;
    public readonly bool TransposeB => false;
}

/// <summary>Constants of the warp-tiled kernel: a warp is 8×4 lanes, a lane an 8×8 micro-tile in halves of 4.</summary>
internal static class WarpTiles
{
    /// <summary>Threads of a warp.</summary>
    public const int Lanes = 32;

    /// <summary>Lanes along N.</summary>
    public const int LanesAcross = 4;

    /// <summary>Rows of C a warp covers: 8 lane rows × 4 rows × 2 halves.</summary>
    public const int WarpRows = 64;

    /// <summary>Columns of C a warp covers: 4 lane columns × 4 columns × 2 halves.</summary>
    public const int WarpColumns = 32;

    /// <summary>Columns between a lane's two column halves.</summary>
    public const int HalfColumns = 16;

    /// <summary>BK: depth of a staged slice (eight unrolled steps).</summary>
    public const int Depth = 8;

    /// <summary>Floats after each slice row: keeps the transposing stores conflict-free.</summary>
    public const int Pad = 4;
}

/// <summary>A block of the warp-tiled kernel: warps down × across, each 64×32 of C.</summary>
internal interface IWarpTiledShape
{
    int WarpsDown { get; }

    int WarpsAcross { get; }

    /// <summary>Groups that must fit on a multiprocessor (caps registers through .minnctapersm).</summary>
    int MinGroupsPerMultiprocessor { get; }

    /// <summary>BM = WarpsDown · 64 (kernels cannot call default interface members).</summary>
    int BlockRows { get; }

    /// <summary>BN = WarpsAcross · 32.</summary>
    int BlockColumns { get; }
}

/// <summary>128×128 block: 2 × 4 warps (256 threads), at most 128 registers each: CUDA.</summary>
internal struct Warps128x128 : IWarpTiledShape
{
    public readonly int WarpsDown => 2;
    public readonly int WarpsAcross => 4;
    public readonly int MinGroupsPerMultiprocessor => 2;
    public readonly int BlockRows => WarpsDown * WarpTiles.WarpRows;
    public readonly int BlockColumns => WarpsAcross * WarpTiles.WarpColumns;
}

/// <summary>
/// How a thread of the warp-tiled kernel stages its one 128-bit slot of each slice: loads
/// into registers (issued early), stores into a shared buffer (after the product). A slot is
/// four elements along the operand's contiguous dimension: along the slice row (TN's A, NN's
/// and TN's B: one 128-bit shared store) or along the depth (NN's and NT's A, NT's B: four
/// scalar stores, transposing).
/// </summary>
internal struct WarpTileStaging<TShape, TLayout, TAccess>
    where TShape : struct, IWarpTiledShape
    where TLayout : struct, IMatmulLayout
    where TAccess : struct, IGlobalAccess
{
    private readonly ArrayView<float> a;
    private readonly ArrayView<float> b;
    private readonly int lda;
    private readonly int ldb;
    private readonly int m;
    private readonly int n;
    private readonly int row0;
    private readonly int column0;
    private readonly int thread;
    private Float4 nextA;
    private Float4 nextB;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public WarpTileStaging(ArrayView<float> a, ArrayView<float> b, MatmulSizes sizes, int row0, int column0, int thread)
    {
        this.a = a;
        this.b = b;
        lda = sizes.Lda;
        ldb = sizes.Ldb;
        m = sizes.M;
        n = sizes.N;
        this.row0 = row0;
        this.column0 = column0;
        this.thread = thread;
        nextA = default;
        nextB = default;
    }

    /// <summary>Reads this thread's slots of the slices at depth0 (zeros past depthEnd, M and N).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Load(int depth0, int depthEnd)
    {
        var shape = default(TShape);
        var layout = default(TLayout);
        nextA = layout.TransposeA
            ? LoadAlong(a, lda, depth0, depthEnd, row0, m, shape.BlockRows)
            : LoadAcross(a, lda, row0, m, depth0, depthEnd);
        nextB = layout.TransposeB
            ? LoadAcross(b, ldb, column0, n, depth0, depthEnd)
            : LoadAlong(b, ldb, depth0, depthEnd, column0, n, shape.BlockColumns);
    }

    /// <summary>Writes the loaded slots into buffer <paramref name="buffer"/> (0 or 1) of the slices.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Store(ArrayView<Float4> aSlices, ArrayView<Float4> bSlices, int buffer)
    {
        var shape = default(TShape);
        var layout = default(TLayout);
        if (layout.TransposeA)
            StoreAlong(aSlices, buffer, shape.BlockRows, nextA);
        else
            StoreAcross(aSlices, buffer, shape.BlockRows, nextA);
        if (layout.TransposeB)
            StoreAcross(bSlices, buffer, shape.BlockColumns, nextB);
        else
            StoreAlong(bSlices, buffer, shape.BlockColumns, nextB);
    }

    // Slot of a [BK, width] slice stored row-major in the source ([K, ld]): depth thread / (width/4), four columns.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private readonly Float4 LoadAlong(ArrayView<float> source, int ld, int depth0, int depthEnd, int x0, int xEnd, int width)
    {
        var depth = thread / (width / 4);
        var x = x0 + (thread - depth * (width / 4)) * 4;
        return Slot(source, ld, depth0 + depth, depthEnd, x, xEnd);
    }

    // Slot of a [width, BK] slice stored row-major in the source ([width, ld]): row thread / (BK/4), four depths.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private readonly Float4 LoadAcross(ArrayView<float> source, int ld, int x0, int xEnd, int depth0, int depthEnd)
    {
        var x = thread / (WarpTiles.Depth / 4);
        var depth = depth0 + (thread - x * (WarpTiles.Depth / 4)) * 4;
        return Slot(source, ld, x0 + x, xEnd, depth, depthEnd);
    }

    // source[outer, inner .. inner + 3], zeros outside [outerEnd, innerEnd).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Float4 Slot(ArrayView<float> source, int ld, int outer, int outerEnd, int inner, int innerEnd)
    {
        if (outer >= outerEnd)
            return default;
        var index = outer * ld + inner;
        if (default(TAccess).Vector && inner + 3 < innerEnd)
            return source.Cast<Float4>().AsAligned(16)[index / 4];
        return new Float4(
            inner < innerEnd ? source[index] : 0f,
            inner + 1 < innerEnd ? source[index + 1] : 0f,
            inner + 2 < innerEnd ? source[index + 2] : 0f,
            inner + 3 < innerEnd ? source[index + 3] : 0f);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private readonly void StoreAlong(ArrayView<Float4> slices, int buffer, int width, Float4 value)
    {
        var row = (width + WarpTiles.Pad) / 4;
        var depth = thread / (width / 4);
        slices[(buffer * WarpTiles.Depth + depth) * row + thread - depth * (width / 4)] = value;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private readonly void StoreAcross(ArrayView<Float4> slices, int buffer, int width, Float4 value)
    {
        var row = width + WarpTiles.Pad;
        var x = thread / (WarpTiles.Depth / 4);
        var depth = (thread - x * (WarpTiles.Depth / 4)) * 4;
        var floats = slices.Cast<float>();
        var at = (buffer * WarpTiles.Depth + depth) * row + x;
        floats[at] = value.X;
        floats[at + row] = value.Y;
        floats[at + 2 * row] = value.Z;
        floats[at + 3 * row] = value.W;
    }
}

/// <summary>
/// One depth step of the warp-tiled kernel: two 128-bit loads of the A slice (the lane's two
/// 4-row halves), two of the B slice (its two 4-column halves), 64 multiply-adds.
/// </summary>
internal struct WarpTileStep : IDepthStep
{
    public ArrayView<Float4> ASlices;
    public ArrayView<Float4> BSlices;
    public int ARow;
    public int BRow;
    public int AGroup;
    public int BGroup;
    public int Buffer;
    public Tile4<VectorPair<Float4>> Low;   // rows +0..3, columns +0..3 and +16..19
    public Tile4<VectorPair<Float4>> High;  // rows +32..35

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Step(int depth)
    {
        var aAt = (Buffer * WarpTiles.Depth + depth) * ARow + AGroup;
        var low = ASlices[aAt];
        var high = ASlices[aAt + WarpTiles.WarpRows / 2 / 4];
        var b = default(VectorPair<Float4>);
        b.Load(BSlices, (Buffer * WarpTiles.Depth + depth) * BRow + BGroup, WarpTiles.HalfColumns / 4);
        Low.Outer(low, b);
        High.Outer(high, b);
    }
}

/// <summary>Writes a warp tile's 128-bit groups through the epilogue.</summary>
internal struct WarpTileStore<TAccess>(MatmulOutput output) : IFloat4Visitor
    where TAccess : struct, IGlobalAccess
{
    private readonly MatmulOutput output = output;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Visit(int row, int column, Float4 value) => output.Store4<TAccess>(row, column, value);
}
