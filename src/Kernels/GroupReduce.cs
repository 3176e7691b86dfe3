using ILGPU;

namespace GpuTransformer.Kernels;

/// <summary>
/// Portable, deterministic group-wide reductions for use inside kernels: a shared-memory
/// tree with barriers (no atomics, no warp shuffles, no ILGPU collectives, so they run on
/// PoCL too). Every thread of the group must call them (they contain barriers); the group
/// size along X must be a power of two no larger than the scratch view. The summation
/// order is fixed by the tree, so results do not depend on scheduling.
/// </summary>
public static class GroupReduce
{
    /// <summary>Largest group size the row-wise kernels use; their shared scratch is this long.</summary>
    public const int MaxGroupSize = 256;

    /// <summary>Sum of <paramref name="value"/> over the group, returned to every thread.</summary>
    /// <param name="value">This thread's contribution.</param>
    /// <param name="scratch">Shared memory of at least Group.DimX floats.</param>
    public static float Sum(float value, ArrayView<float> scratch)
    {
        var thread = Group.IdxX;
        scratch[thread] = value;
        Group.Barrier();
        for (var stride = Group.DimX / 2; stride > 0; stride /= 2)
        {
            if (thread < stride)
                scratch[thread] += scratch[thread + stride];
            Group.Barrier();
        }
        var result = scratch[0];
        Group.Barrier(); // scratch may be reused right after
        return result;
    }

    /// <summary>Maximum of <paramref name="value"/> over the group, returned to every thread.</summary>
    /// <param name="value">This thread's value (use float.NegativeInfinity for "none").</param>
    /// <param name="scratch">Shared memory of at least Group.DimX floats.</param>
    public static float Max(float value, ArrayView<float> scratch)
    {
        var thread = Group.IdxX;
        scratch[thread] = value;
        Group.Barrier();
        for (var stride = Group.DimX / 2; stride > 0; stride /= 2)
        {
            if (thread < stride)
                scratch[thread] = MathF.Max(scratch[thread], scratch[thread + stride]);
            Group.Barrier();
        }
        var result = scratch[0];
        Group.Barrier();
        return result;
    }

    /// <summary>Whether <paramref name="groupSize"/> is a valid group size for these reductions.</summary>
    public static bool IsValidGroupSize(int groupSize) =>
        groupSize is > 0 and <= MaxGroupSize && (groupSize & (groupSize - 1)) == 0;
}
