namespace GpuTransformer.Tests.Infrastructure;

/// <summary>
/// Every kernel instantiation a backend's tuning can pick, with its block shape read from the
/// type parameters of the family's own entry points (<see cref="IKernelFamily{TSelf}.EntryPoints"/>):
/// a tile added to <see cref="MatmulTile"/> or <see cref="AttentionTile"/>, or a row group size
/// added to a backend's tuning, is tested without editing the tests.
/// </summary>
public static class KernelInstantiations
{
    /// <summary>A matmul tile: BM × BN of C per group, slices BK deep, and its threads per group.</summary>
    public sealed record MatmulBlock(MatmulTile Tile, int Rows, int Columns, int Depth, int Threads);

    /// <summary>An attention tile: rows a group owns, rows of the other side streamed per step, threads per group.</summary>
    public sealed record AttentionBlock(AttentionTile Tile, int OwnedRows, int StreamedRows, int Threads);

    /// <summary>What <see cref="KernelTuning.For"/> picks for every backend on every kind of device.</summary>
    public static IReadOnlyList<KernelTuning> Tunings { get; } =
    [
        .. from backend in Enum.GetValues<Backend>()
           from kind in Enum.GetValues<DeviceKind>()
           select KernelTuning.For(backend, AnyDevice(backend, kind)),
    ];

    /// <summary>Every row group size some backend's tuning picks (softmax, layernorm, cross-entropy).</summary>
    public static IReadOnlyList<int> RowGroupSizes { get; } = [.. Tunings.Select(t => t.RowGroupSize).Distinct().Order()];

    /// <summary>Every way some backend's tuning splits a row (<see cref="RowTile"/>).</summary>
    public static IReadOnlyList<RowTile> RowTiles { get; } = [.. Tunings.Select(t => t.RowTile).Distinct().Order()];

    /// <summary>The block shape of <paramref name="tile"/>, from the shape type its tiled kernels are instantiated with.</summary>
    public static MatmulBlock Matmul(MatmulTile tile)
    {
        var entries = MatmulKernels.EntryPoints(Tunings[0] with { Matmul = tile }).ToList();
        if (TypeArguments<IWarpTiledShape>(entries) is [var warps])
            return new MatmulBlock(tile, warps.BlockRows, warps.BlockColumns, WarpTiles.Depth, warps.WarpsDown * warps.WarpsAcross * WarpTiles.Lanes);
        var shape = TypeArgument<IMatmulShape>(entries, tile);
        var threads = (shape.BlockRows / shape.RowsPerThread) * (shape.BlockColumns / shape.ColumnsPerThread);
        return new MatmulBlock(tile, shape.BlockRows, shape.BlockColumns, shape.BlockDepth, threads);
    }

    /// <summary>
    /// The block shape of <paramref name="tile"/>, from the tile type its attention kernels are
    /// instantiated with; for the register-tiled kernels the largest owned and streamed blocks of
    /// their forward and gradient kernels over both head bounds.
    /// </summary>
    public static AttentionBlock Attention(AttentionTile tile)
    {
        var entries = AttentionKernels.EntryPoints(Tunings[0] with { Attention = tile }).ToList();
        var blocks = TypeArguments<AttentionKernels.IRegisterBlocks>(entries);
        if (blocks.Count > 0)
        {
            return new AttentionBlock(
                tile,
                blocks.Max(b => Math.Max(b.ForwardQueries, b.GradientKeys)),
                blocks.Max(b => Math.Max(b.ForwardKeys, b.GradientQueries)),
                AttentionKernels.ThreadsPerGroup(tile));
        }
        var shape = TypeArgument<AttentionKernels.IAttentionTile>(entries, tile);
        return new AttentionBlock(tile, shape.Rows, shape.Cols, shape.Rows * shape.ThreadsPerRow);
    }

    /// <summary>A description of a device of <paramref name="kind"/> that allows any group size up to 1024.</summary>
    private static DeviceDescription AnyDevice(Backend backend, DeviceKind kind) =>
        new(backend, 0, $"any {kind}", kind, 1L << 30, MaxGroupSize: 1024, WarpSize: 32, Multiprocessors: 1, SharedMemoryPerGroup: 48 << 10, Features: "", NeedsPortableOptIn: false);

    /// <summary>The one type argument implementing <typeparamref name="TShape"/> among the generic entry points, as a value.</summary>
    private static TShape TypeArgument<TShape>(IEnumerable<KernelEntry> entries, Enum tile)
    {
        var shapes = TypeArguments<TShape>(entries);
        if (shapes.Count != 1)
        {
            throw new InvalidOperationException(
                $"{tile}: expected one {typeof(TShape).Name} type argument among the entry points, found [{string.Join(", ", shapes.Select(t => t!.GetType().Name))}].");
        }
        return shapes[0];
    }

    /// <summary>Every distinct type argument implementing <typeparamref name="TShape"/> among the generic entry points, as values.</summary>
    private static List<TShape> TypeArguments<TShape>(IEnumerable<KernelEntry> entries) =>
        [
            .. entries
                .Where(e => e.Method.IsGenericMethod)
                .SelectMany(e => e.Method.GetGenericArguments())
                .Where(t => typeof(TShape).IsAssignableFrom(t))
                .Distinct()
                .Select(t => (TShape)Activator.CreateInstance(t)!),
        ];
}
