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
