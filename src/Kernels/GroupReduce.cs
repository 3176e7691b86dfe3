using ILGPU;

namespace GpuTransformer.Kernels;

/// <summary>
/// Portable, deterministic group-wide reductions for use inside kernels: a shared-memory
/// tree with barriers (no atomics, no warp shuffles, no ILGPU collectives, so they run on
/// PoCL too). Every thread of the group must call them (they contain barriers); the group
/// size along X must be a power of two no larger than the scratch view. The summation
/// order is fixed by the tree, so results do not depend on scheduling.
/// </summary>
internal static class GroupReduce
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

    /// <summary>
    /// Reduces one (a, b) pair per thread over the group with a tree of radix 8, returned to
    /// every thread: 5 barriers for 256 threads (levels 256 → 32 → 4 → 1) where two calls of
    /// <see cref="Sum"/> or <see cref="Max"/> take 20. Each level combines eight neighbours in
    /// index order, so the result does not depend on scheduling.
    /// </summary>
    /// <typeparam name="TOperation">How two pairs combine (a softmax's (max, Σexp), or two sums).</typeparam>
    /// <param name="a">This thread's first value.</param>
    /// <param name="b">This thread's second value.</param>
    /// <param name="scratch">Shared memory of at least 4·Group.DimX floats (two buffers of pairs).</param>
    public static (float A, float B) Pairs<TOperation>(float a, float b, ArrayView<float> scratch)
        where TOperation : struct, IPairReduction
    {
        var threads = Group.DimX;
        var thread = Group.IdxX;
        scratch[thread] = a;
        scratch[threads + thread] = b;
        Group.Barrier();
        var from = 0;
        var to = 2 * threads;
        for (var width = threads; width > 1; width = (width + 7) / 8)
        {
            var next = (width + 7) / 8;
            if (thread < next)
            {
                var first = 8 * thread;
                var end = Math.Min(first + 8, width);
                var ra = scratch[from + first];
                var rb = scratch[from + threads + first];
                for (var i = first + 1; i < end; i++)
                    default(TOperation).Combine(ref ra, ref rb, scratch[from + i], scratch[from + threads + i]);
                scratch[to + thread] = ra;
                scratch[to + threads + thread] = rb;
            }
            Group.Barrier();
            (from, to) = (to, from);
        }
        var result = (scratch[from], scratch[from + threads]);
        Group.Barrier(); // scratch may be reused right after
        return result;
    }

    /// <summary>Whether <paramref name="groupSize"/> is a valid group size for these reductions.</summary>
    public static bool IsValidGroupSize(int groupSize) =>
        groupSize is > 0 and <= MaxGroupSize && (groupSize & (groupSize - 1)) == 0;
}

/// <summary>How two (a, b) pairs combine in <see cref="GroupReduce.Pairs{TOperation}"/>.</summary>
internal interface IPairReduction
{
    /// <summary>(a, b) ← (a, b) combined with (a2, b2).</summary>
    void Combine(ref float a, ref float b, float a2, float b2);
}

/// <summary>
/// Softmax statistics of two parts of a row, (max, Σ exp(x − max)) each, as those of the whole:
/// one reduction instead of a max and then a sum. An empty part is (−∞, 0).
/// </summary>
internal struct MaxAndExpSum : IPairReduction
{
    /// <inheritdoc/>
    public readonly void Combine(ref float a, ref float b, float a2, float b2)
    {
        var max = MathF.Max(a, a2);
        if (max == float.NegativeInfinity)
            return;
        b = (a == float.NegativeInfinity ? 0f : b * MathF.Exp(a - max)) + (a2 == float.NegativeInfinity ? 0f : b2 * MathF.Exp(a2 - max));
        a = max;
    }
}

/// <summary>Two sums reduced together.</summary>
internal struct TwoSums : IPairReduction
{
    /// <inheritdoc/>
    public readonly void Combine(ref float a, ref float b, float a2, float b2)
    {
        a += a2;
        b += b2;
    }
}
