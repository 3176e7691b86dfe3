using ILGPU;
using ILGPU.Runtime;

namespace GpuTransformer.Kernels;

/// <summary>
/// Launch shape of kernels over a [rows, columns] array, one thread per element: grid X is
/// the row, grid Y the block of Group.DimX columns. No thread divides an index (CPU OpenCL
/// cannot vectorize integer division), neighbouring threads touch neighbouring columns
/// (coalesced on GPUs, vector lanes on CPUs), and per-row values are computed once per group.
/// </summary>
internal static class RowGrid
{
    /// <summary>The launch for <paramref name="rows"/> × <paramref name="columns"/> with groups of <paramref name="groupSize"/> columns.</summary>
    public static KernelConfig Config(int rows, int columns, int groupSize) =>
        new(new Index2D(rows, (columns + groupSize - 1) / groupSize), new Index2D(groupSize, 1));

    /// <summary>This thread's row (inside kernels).</summary>
    public static int Row => Grid.IdxX;

    /// <summary>This thread's column (inside kernels); may be ≥ columns in the last block.</summary>
    public static int Column => Grid.IdxY * Group.DimX + Group.IdxX;
}
