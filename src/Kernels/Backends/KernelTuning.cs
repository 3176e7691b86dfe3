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

    /// <summary>Threads per group of row-wise kernels (softmax, layernorm, cross-entropy, reductions): a power of two ≤ 256.</summary>
    public required int RowGroupSize { get; init; }

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
                Attention = AttentionTile.Q16K16,
                RowGroupSize = Math.Min(16, device.MaxGroupSize),
            },
            // PoCL and OpenCL GPUs.
            Backend.OpenCL when device.Kind == DeviceKind.Cpu => new KernelTuning
            {
                Matmul = MatmulTile.Cpu128x32,
                Attention = AttentionTile.Q32K32,
                RowGroupSize = 64,
            },
            Backend.OpenCL => new KernelTuning
            {
                Matmul = MatmulTile.Tile64x64,
                Attention = AttentionTile.Q64K64,
                RowGroupSize = 256,
            },
            Backend.Cuda => new KernelTuning
            {
                Matmul = MatmulTile.Tile128x128,
                Attention = AttentionTile.Q64K64,
                RowGroupSize = 256,
            },
            _ => throw new ArgumentOutOfRangeException(nameof(backend)),
        };
    }
}

/// <summary>
/// Matmul block tiles (rows × columns of C per group); each is an instantiation of the tiled
/// kernel (see <c>Matmul</c>).
/// </summary>
public enum MatmulTile
{
    /// <summary>16×16 block, 4×4 register micro-tiles, 16 threads, BK 16: the CPU simulator.</summary>
    Tile16x16,

    /// <summary>32×32 block, 4×4 micro-tiles, 64 threads, BK 16.</summary>
    Tile32x32,

    /// <summary>64×64 block, 4×4 micro-tiles, 256 threads, BK 16: OpenCL GPUs.</summary>
    Tile64x64,

    /// <summary>128×128 block, 8×8 micro-tiles, 256 threads, BK 8: CUDA.</summary>
    Tile128x128,

    /// <summary>
    /// 128×32 block of 32 work-items with contiguous 4×32 micro-tiles, BK 128: PoCL on the CPU,
    /// where a work-group runs as a loop and each work-item's micro-tile is vectorised.
    /// </summary>
    Cpu128x32,
}

/// <summary>Attention block sizes: query rows × key rows per step.</summary>
public enum AttentionTile
{
    Q16K16,
    Q32K32,
    Q64K64,
}
