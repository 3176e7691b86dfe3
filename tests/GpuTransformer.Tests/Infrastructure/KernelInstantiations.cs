using GpuTransformer.Kernels;
using GpuTransformer.Kernels.Backends;

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

    /// <summary>The block shape of <paramref name="tile"/>, from the shape type its tiled kernels are instantiated with.</summary>
    public static MatmulBlock Matmul(MatmulTile tile)
    {
        var shape = TypeArgument<IMatmulShape>(MatmulKernels.EntryPoints(Tunings[0] with { Matmul = tile }), tile);
        var threads = (shape.BlockRows / shape.RowsPerThread) * (shape.BlockColumns / shape.ColumnsPerThread);
        return new MatmulBlock(tile, shape.BlockRows, shape.BlockColumns, shape.BlockDepth, threads);
    }

    /// <summary>The block shape of <paramref name="tile"/>, from the tile type its attention kernels are instantiated with.</summary>
    public static AttentionBlock Attention(AttentionTile tile)
    {
        var shape = TypeArgument<AttentionKernels.IAttentionTile>(AttentionKernels.EntryPoints(Tunings[0] with { Attention = tile }), tile);
        return new AttentionBlock(tile, shape.Rows, shape.Cols, shape.Rows * shape.ThreadsPerRow);
    }

    /// <summary>A description of a device of <paramref name="kind"/> that allows any group size up to 1024.</summary>
    private static DeviceDescription AnyDevice(Backend backend, DeviceKind kind) =>
        new(backend, 0, $"any {kind}", kind, 1L << 30, MaxGroupSize: 1024, WarpSize: 32, Multiprocessors: 1, SharedMemoryPerGroup: 48 << 10, Features: "", NeedsPortableOptIn: false);

    /// <summary>The one type argument implementing <typeparamref name="TShape"/> among the generic entry points, as a value.</summary>
    private static TShape TypeArgument<TShape>(IEnumerable<KernelEntry> entries, Enum tile)
    {
        var types = entries
            .Where(e => e.Method.IsGenericMethod)
            .SelectMany(e => e.Method.GetGenericArguments())
            .Where(t => typeof(TShape).IsAssignableFrom(t))
            .Distinct()
            .ToList();
        if (types.Count != 1)
        {
            throw new InvalidOperationException(
                $"{tile}: expected one {typeof(TShape).Name} type argument among the entry points, found [{string.Join(", ", types.Select(t => t.Name))}].");
        }
        return (TShape)Activator.CreateInstance(types[0])!;
    }
}
