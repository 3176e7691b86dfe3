namespace GpuTransformer.Kernels.Backends;

/// <summary>
/// Tile and group sizes for every kernel family, chosen per backend in this one place.
/// Tile shapes are compile-time type parameters of the kernels (so shared-memory sizes
/// and register micro-tiles are constants); this record picks which instantiation a
/// device compiles. Tests override it through <see cref="DeviceOptions.Tuning"/> to run
/// every instantiation on small shapes.
/// </summary>
public sealed record KernelTuning
{
    /// <summary>Block tile of the matmul kernels.</summary>
    public required MatmulTile Matmul { get; init; }

    /// <summary>Query/key block sizes of the fused attention kernels.</summary>
    public required AttentionTile Attention { get; init; }

    /// <summary>
    /// Fewest groups a tiled matmul launch should have; one with fewer blocks (a weight
    /// gradient of few output tiles and a long K) splits its depth across groups (split-K,
    /// deterministic) where the tile supports it. 0 never splits; GPUs: twice the
    /// multiprocessors, so every multiprocessor gets work and latency is hidden.
    /// </summary>
    public int MatmulMinimumGroups { get; init; }

    /// <summary>
    /// Deepest K one group of the tiled matmul covers when a product has more than one column
    /// block; deeper products split their depth across groups (split-K, partials summed in split
    /// order) so that the A rows a group reads are still in cache when the next column block's
    /// group reads them. 0 never splits for depth. PoCL: 2048 (a row block's A rows over 2048
    /// depths are 1 MiB, a Zen 4 core's L2): NN [1024 × 256] with K = 16384 86 → 134 GFLOP/s, the
    /// LM head's dX [2048 × 256], K = 8192, ~103–116 → 132–144 in most runs (its rate swings with the
    /// machine's memory traffic); K = 4096 gained nothing and K = 2048 split in two lost ~15 %
    /// (bench/results/2026-12-06-training-step-vs-pytorch-cpu-split.md for the step).
    /// </summary>
    public int MatmulSplitDepth { get; init; }

    /// <summary>
    /// Most column blocks one group of the tiled matmul computes side by side, each depth slice
    /// of A against every block's B slice in turn, so that A's slice is read from memory once per
    /// run instead of once per block (tiles with <c>MaxColumnRun</c> above 1: PoCL's); 0 or 1 one
    /// block per group. PoCL: 4 (in alternating rounds SGEMM 2048 ~146 → ~177 GFLOP/s, 1024 ~180
    /// → ~190, the LM head's [2048 × 8192] forward ~134 → ~156; 8 was no better at 2048).
    /// </summary>
    public int MatmulColumnRun { get; init; }

    /// <summary>
    /// Most rows of C an NT product (a Linear forward) may have to run the few-rows kernel
    /// (<see cref="MatmulKernels.MultiplyFewRows"/>: one thread per column, a dot product per
    /// row) instead of the tiled one; 0 never. Decoding multiplies one row per sequence, for
    /// which a 128×32 block tile computes 127 rows of nothing.
    /// </summary>
    public int MatmulFewRows { get; init; }

    /// <summary>
    /// Fewest groups an attention forward should have; one with fewer query blocks (decoding:
    /// a query row per sequence over a long key cache) splits its keys across groups
    /// (flash-decoding, combined deterministically) where the tile supports it. 0 never splits.
    /// </summary>
    public int AttentionMinimumGroups { get; init; }

    /// <summary>
    /// Longest key length Tk at which a training forward and its backward run unfused
    /// (<see cref="UnfusedAttentionKernels"/>: batched products, softmax, P [B, H, Tq, Tk] kept)
    /// instead of fused; longer sequences, and forwards with no backward to follow, run the fused
    /// kernels. 0 never (GPUs: the fused kernels are faster and need no T² memory). PoCL: 512,
    /// measured (bench/results/2026-12-06-attention-fused-vs-unfused-pocl.md: forward+backward
    /// at B 16, H 4 and 8, d 32, causal, unfused 0.55–0.73× the fused time at T 128, 0.52–0.87×
    /// at 256, 0.82–1.02× at 512; longer not measured; the forward alone is faster fused). The
    /// cost: 2·B·H·T² floats per attention layer (P and dS), 1 GiB over 4 layers at B 16, H 8, T 512.
    /// </summary>
    public int UnfusedAttentionMaxLength { get; init; }

    /// <summary>Threads per group of row-wise kernels (softmax, layernorm, cross-entropy, reductions): a power of two ≤ 256.</summary>
    public required int RowGroupSize { get; init; }

    /// <summary>How the row-wise kernels (softmax, layernorm, cross-entropy) split a row (default: <see cref="RowTile.Strided"/> with <see cref="RowGroupSize"/> threads).</summary>
    public RowTile RowTile { get; init; }

    /// <summary>
    /// Threads per group of kernels with one thread per element of a [rows, columns] array
    /// (positional encoding, embedding, column sums; a group spans this many columns of one
    /// row) and of the vector reductions' first pass: a power of two ≤ 256. On CPU OpenCL the
    /// group is the vector loop, so it must not be 1 there.
    /// </summary>
    public int ElementGroupSize { get; init; } = 256;

    /// <summary>The choice for <paramref name="backend"/> on <paramref name="device"/>.</summary>
    public static KernelTuning For(Backend backend, DeviceDescription device)
    {
        ArgumentNullException.ThrowIfNull(device);
        return backend switch
        {
            // The simulator runs every thread as an OS thread and a barrier costs ~µs per
            // thread: smallest groups that still exercise tiling, ragged edges and micro-tiles.
            Backend.Cpu => new KernelTuning
            {
                Matmul = MatmulTile.Tile16x16,
                MatmulFewRows = 4,                    // so that decoding tests run the kernel PoCL runs
                Attention = AttentionTile.Q8K16T2,
                RowGroupSize = Math.Min(16, device.MaxGroupSize),
                ElementGroupSize = Math.Min(16, device.MaxGroupSize),
            },
            // PoCL and OpenCL GPUs.
            Backend.OpenCL when device.Kind == DeviceKind.Cpu => new KernelTuning
            {
                Matmul = MatmulTile.Cpu128x32,
                MatmulSplitDepth = 2048,
                MatmulColumnRun = 4,
                // Decoding (M = 1, the cpu preset's products): the 128×32 tile ran at 0.2 GFLOP/s.
                MatmulFewRows = 4,
                Attention = AttentionTile.Q64K32T1,
                UnfusedAttentionMaxLength = 512,
                RowTile = RowTile.CpuLanes,
                // One work-item per row: PoCL then runs a plain loop over a contiguous row
                // (no barrier regions); softmax/layernorm/cross-entropy measured 2–5× faster than with 64.
                RowGroupSize = 1,
                ElementGroupSize = 64,
            },
            // GPUs: the register-tiled kernels of issue 9 (PTX-checked: no local memory, 128-bit
            // shared loads); OpenCL GPUs run the same portable kernels, unmeasured there.
            Backend.OpenCL or Backend.Cuda => new KernelTuning
            {
                Matmul = MatmulTile.Tile128x128,
                MatmulMinimumGroups = 2 * device.Multiprocessors,
                Attention = AttentionTile.RegisterTiled,
                AttentionMinimumGroups = 2 * device.Multiprocessors,
                RowTile = RowTile.Vector256,
                RowGroupSize = 256,
            },
            _ => throw new ArgumentOutOfRangeException(nameof(backend)),
        };
    }
}

/// <summary>
/// Matmul block tiles (rows × columns of C per group); each is an instantiation of the tiled
/// kernel (see <see cref="MatmulKernels"/>).
/// </summary>
public enum MatmulTile
{
    /// <summary>16×16 block, 4×4 register micro-tiles, 16 threads, BK 16: the CPU simulator.</summary>
    Tile16x16,

    /// <summary>32×32 block, 4×4 micro-tiles, 64 threads, BK 16.</summary>
    Tile32x32,

    /// <summary>64×64 block, 4×4 micro-tiles, 256 threads, BK 16.</summary>
    Tile64x64,

    /// <summary>
    /// 128×128 block, warp-tiled: 256 threads as 2 × 4 warps of 8 × 4 lanes, 8×8 micro-tiles
    /// read with 128-bit shared loads, double-buffered BK 8 slices, split-K for small grids: CUDA
    /// and OpenCL GPUs.
    /// Two instantiations per layout: 128-bit global loads when every leading dimension, batch
    /// stride and view offset is a multiple of 4, scalar loads otherwise (chosen at launch).
    /// </summary>
    Tile128x128,

    /// <summary>
    /// 128×32 block of 32 work-items with contiguous 4×32 micro-tiles, BK 128: PoCL on the CPU,
    /// where a work-group runs as a loop and each work-item's micro-tile is vectorised.
    /// </summary>
    Cpu128x32,
}

/// <summary>
/// Block shapes of the fused attention kernels, named Q{rows}K{streamed}T{threads per row}.
/// A group owns Q rows (query rows in the forward and dQ kernels, key rows in the dK/dV
/// kernel) with T threads per row, so it has Q·T threads, and streams blocks of K rows of
/// the other side (keys, resp. queries) through shared memory. Each is a kernel
/// instantiation (<see cref="AttentionKernels"/>'s tile structs); shared memory grows with the head-size
/// bound (64 or 128) and K.
/// </summary>
public enum AttentionTile
{
    /// <summary>8 rows × 2 threads (16-thread groups), 16 streamed rows: the simulator, where a barrier costs ~µs per thread. Exercises the multi-thread-per-row path.</summary>
    Q8K16T2,

    /// <summary>64 rows × 1 thread, 32 streamed rows: PoCL, where each work-item's inner loops over 32 keys or d columns are contiguous and vectorise, with the fewest barriers (measured faster than 32×32, 128×32, 64×16, 16×64 and 32×64 there).</summary>
    Q64K32T1,

    /// <summary>
    /// GPUs: register-tiled kernels of 128 threads. Products in 4-row register tiles read with
    /// 128-bit shared loads (≥ 8 multiply-adds per load), the Q block staged once, no local
    /// memory. Blocks: d ≤ 64 forward 64 queries × 32 keys, gradients 32 × 32; d ≤ 128 forward
    /// 32 × 16, gradients 16 × 16 (under 48 KB of static shared memory). The forward splits long
    /// key ranges across groups when the query blocks alone would not fill the device
    /// (flash-decoding, <see cref="KernelTuning.AttentionMinimumGroups"/>). Attention maps use the
    /// row-split kernel with 64 rows × 4 threads (256-thread groups), 16 streamed rows.
    /// </summary>
    RegisterTiled,
}

/// <summary>How the row-wise kernels (softmax, layernorm, cross-entropy) work through a row.</summary>
public enum RowTile
{
    /// <summary>
    /// One group of <see cref="KernelTuning.RowGroupSize"/> threads per row striding over the
    /// columns, any length: PoCL (a group of 1 is a plain loop over a contiguous row) and the simulator.
    /// </summary>
    Strided,

    /// <summary>
    /// GPUs: 256 threads per row; softmax and layernorm keep rows of up to 4096 floats in
    /// registers (read once, four 128-bit loads per thread in flight) and reduce (max, Σexp) or
    /// two sums in one radix-8 tree; layernorm's backward produces the dγ/dβ partials of 32 rows
    /// in the pass that writes dx; cross-entropy streams its row in 128-bit loads. 128-bit
    /// accesses in one instantiation, chosen at launch when rows start 16-byte aligned, scalar in
    /// the other; rows over 4096 use the strided kernels.
    /// </summary>
    Vector256,

    /// <summary>
    /// PoCL: one work-item per row, which walks it 8 columns at a time as 8 named lanes
    /// (<c>Lanes8</c>) with a branch-free polynomial e^x, so that LLVM vectorises the reductions
    /// and the exps that keep a plain loop scalar: softmax, cross-entropy, layernorm's forward and
    /// dx (its dγ/dβ kernels are the <see cref="Strided"/> ones).
    /// </summary>
    CpuLanes,
}
