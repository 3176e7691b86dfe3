using System.Runtime.CompilerServices;
using GpuTransformer.Kernels.Backends;
using ILGPU;
using ILGPU.Runtime;

namespace GpuTransformer.Kernels;

/// <summary>
/// What the row-wise families (<see cref="SoftmaxKernels"/>, <see cref="LayerNormKernels"/>,
/// <see cref="CrossEntropyKernels"/>) share: one group of <see cref="KernelTuning.RowGroupSize"/>
/// threads per row, the threads striding over the columns (so consecutive threads read
/// consecutive addresses and any column count works), and the streaming softmax statistics.
/// </summary>
internal static class RowGroup
{
    /// <summary>The device's row group size, checked against what <see cref="GroupReduce"/> and the device allow.</summary>
    public static int Size(ComputeDevice device)
    {
        var size = device.Tuning.RowGroupSize;
        if (!GroupReduce.IsValidGroupSize(size) || size > device.Description.MaxGroupSize)
        {
            throw new ArgumentException(
                $"KernelTuning.RowGroupSize = {size} is not a power of two in [1, {Math.Min(GroupReduce.MaxGroupSize, device.Description.MaxGroupSize)}] " +
                $"(GroupReduce allows ≤ {GroupReduce.MaxGroupSize}, {device.Description.Name} ≤ {device.Description.MaxGroupSize}).",
                nameof(device));
        }
        return size;
    }

    /// <summary>Whether the device's tuning asks for <see cref="RowTile.Vector256"/>; checks that the device runs 256-thread groups.</summary>
    public static bool UsesRegisters(ComputeDevice device)
    {
        if (device.Tuning.RowTile != RowTile.Vector256)
            return false;
        if (device.Description.MaxGroupSize < RowRegisters.Threads)
        {
            throw new ArgumentException(
                $"KernelTuning.RowTile = {RowTile.Vector256} needs {RowRegisters.Threads} threads per group; {device.Description.Name} allows {device.Description.MaxGroupSize}.",
                nameof(device));
        }
        return true;
    }

    /// <summary><paramref name="view"/> must not overlap any of <paramref name="others"/> (checked without allocating).</summary>
    public static void Disjoint(ArrayView<float> view, string name, params ReadOnlySpan<(ArrayView<float> View, string Name)> others)
    {
        foreach (var (other, otherName) in others)
            Require.Distinct(view, name, other, otherName);
    }

    /// <summary>One group per row.</summary>
    public static KernelConfig PerRow(int rows, int groupSize) => new(rows, groupSize);

    /// <summary>
    /// Folds <paramref name="x"/> into a thread's running softmax statistics: the maximum
    /// so far and Σ exp(x − max) rescaled whenever the maximum grows (one read of the row
    /// instead of a max pass and a sum pass). −∞ contributes nothing, also before any
    /// finite value was seen.
    /// </summary>
    public static void Fold(float x, ref float max, ref float sum)
    {
        if (x > max)
        {
            sum = sum * MathF.Exp(max - x) + 1f;
            max = x;
        }
        else if (max != float.NegativeInfinity)
        {
            sum += MathF.Exp(x - max);
        }
    }

    /// <summary>
    /// Combines every thread's (max, sum) from <see cref="Fold"/> into the row's maximum and
    /// Σ exp(x − max), returned to every thread. A row with no finite value gives max −∞ and sum 0.
    /// </summary>
    public static SoftmaxStatistics Combine(float max, float sum, ArrayView<float> scratch)
    {
        var rowMax = GroupReduce.Max(max, scratch);
        var rescaled = max == float.NegativeInfinity ? 0f : sum * MathF.Exp(max - rowMax);
        return new SoftmaxStatistics(rowMax, GroupReduce.Sum(rescaled, scratch));
    }
}

/// <summary>A row's maximum and Σ exp(x − max).</summary>
internal readonly struct SoftmaxStatistics(float max, float sum)
{
    public readonly float Max = max;
    public readonly float Sum = sum;

    /// <summary>Whether the row had no finite value (fully masked): its softmax is all zeros here.</summary>
    public bool IsEmpty => Max == float.NegativeInfinity;
}

/// <summary>
/// The row-wise kernels of <see cref="RowTile.Vector256"/>: a group of 256 threads holds a row
/// of up to <see cref="MaxColumns"/> floats in registers, thread t owning the 128-bit groups t,
/// t + 256, t + 512, t + 768 (columns 4t …: neighbouring threads, neighbouring addresses). The
/// row is read from memory once, with four independent 128-bit loads per thread in flight
/// (the <see cref="VectorAccess"/> instantiation, when every row starts 16-byte aligned) or
/// scalar loads (<see cref="ScalarAccess"/>); longer rows use the strided kernels.
/// </summary>
internal static class RowRegisters
{
    /// <summary>Threads per group.</summary>
    public const int Threads = 256;

    /// <summary>Longest row held in registers: 256 threads × 16 floats.</summary>
    public const int MaxColumns = 4096;

    /// <summary>Floats of shared scratch <see cref="GroupReduce.Pairs{TOperation}"/> needs.</summary>
    public const int Scratch = 4 * Threads;

    /// <summary>This thread's first column (inside kernels); its groups are <see cref="Threads"/> groups apart.</summary>
    public static int FirstColumn => 4 * Group.IdxX;

    /// <summary>Whether rows of <paramref name="columns"/> floats in these views all start 16-byte aligned (buffers themselves are).</summary>
    public static bool Aligned(int columns, params ReadOnlySpan<ArrayView<float>> views)
    {
        if (columns % 4 != 0)
            return false;
        foreach (var view in views)
        {
            if (((IContiguousArrayView)view).Index % 4 != 0)
                return false;
        }
        return true;
    }

    /// <summary>Loads a row (zeros past <paramref name="columns"/>) through <see cref="IVectorRow{TSelf}.Map"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TRow Load<TRow, TAccess>(ArrayView<float> source, int start, int columns)
        where TRow : struct, IVectorRow<TRow>
        where TAccess : struct, IGlobalAccess
    {
        var row = default(TRow);
        var load = new RowLoad<TAccess>(source, start, columns);
        row.Map(ref load, row, 0, FirstColumn, Threads);
        return row;
    }

    /// <summary>source[start + column …] for the columns below <paramref name="columns"/>, else 0; 128-bit where allowed.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Float4 Read<TAccess>(ArrayView<float> source, int start, int column, int columns)
        where TAccess : struct, IGlobalAccess
    {
        if (default(TAccess).Vector && column + 3 < columns)
            return source.Cast<Float4>().AsAligned(16)[(start + column) / 4];
        return new Float4(
            column < columns ? source[start + column] : 0f,
            column + 1 < columns ? source[start + column + 1] : 0f,
            column + 2 < columns ? source[start + column + 2] : 0f,
            column + 3 < columns ? source[start + column + 3] : 0f);
    }

    /// <summary>target[start + column …] = value for the columns below <paramref name="columns"/>; 128-bit where allowed.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Write<TAccess>(ArrayView<float> target, int start, int column, int columns, Float4 value)
        where TAccess : struct, IGlobalAccess
    {
        if (column + 3 < columns)
        {
            if (default(TAccess).Vector)
            {
                target.Cast<Float4>().AsAligned(16)[(start + column) / 4] = value;
            }
            else
            {
                target[start + column] = value.X;
                target[start + column + 1] = value.Y;
                target[start + column + 2] = value.Z;
                target[start + column + 3] = value.W;
            }
            return;
        }
        // The row's last, partial group. (A loop with only guarded stores crashed PoCL 3.1's vectoriser.)
        if (column < columns)
            target[start + column] = value.X;
        if (column + 1 < columns)
            target[start + column + 1] = value.Y;
        if (column + 2 < columns)
            target[start + column + 2] = value.Z;
        if (column + 3 < columns)
            target[start + column + 3] = value.W;
    }

    private readonly struct RowLoad<TAccess>(ArrayView<float> source, int start, int columns) : IFloat4Mapper
        where TAccess : struct, IGlobalAccess
    {
        private readonly ArrayView<float> source = source;
        private readonly int start = start;
        private readonly int columns = columns;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Float4 Map(int row, int column, Float4 value, Float4 other) => Read<TAccess>(source, start, column, columns);
    }
}
