using ILGPU;
using ILGPU.Runtime;

namespace GpuTransformer.Kernels;

/// <summary>
/// Argument checks every kernel family runs before a launch, so bad input is an
/// <see cref="ArgumentException"/> naming the shapes, never a crash inside a kernel.
/// </summary>
public static class Require
{
    /// <summary>The size <paramref name="name"/> must be ≥ 1.</summary>
    public static void Positive(long value, string name)
    {
        if (value <= 0)
            throw new ArgumentException($"{name} must be positive, got {value}.", name);
    }

    /// <summary>The size <paramref name="name"/> must be ≥ 0.</summary>
    public static void NonNegative(long value, string name)
    {
        if (value < 0)
            throw new ArgumentException($"{name} must not be negative, got {value}.", name);
    }

    /// <summary><paramref name="view"/> must hold at least <paramref name="needed"/> elements for the shape <paramref name="shape"/>.</summary>
    public static void Holds<T>(ArrayView<T> view, long needed, string name, string shape)
        where T : unmanaged
    {
        if (!view.IsValid && needed > 0)
            throw new ArgumentException($"{name} is an empty view but shape {shape} needs {needed} elements.", name);
        if (view.Length < needed)
        {
            throw new ArgumentException(
                $"{name} has {view.Length} elements but shape {shape} needs {needed}.", name);
        }
    }

    /// <summary>Two views that must not be the same memory (an in-place launch would race).</summary>
    public static void Distinct<T>(ArrayView<T> a, string aName, ArrayView<T> b, string bName)
        where T : unmanaged
    {
        if (Overlap(a, b))
            throw new ArgumentException($"{aName} and {bName} overlap; this kernel cannot run in place.", aName);
    }

    /// <summary>
    /// Two views that are either the very same memory (an in-place launch, which the kernel
    /// supports) or do not overlap at all; a partial overlap would race.
    /// </summary>
    public static void SameOrDisjoint<T>(ArrayView<T> a, string aName, ArrayView<T> b, string bName)
        where T : unmanaged
    {
        if (!Overlap(a, b))
            return;
        IContiguousArrayView ca = a, cb = b;
        if (ca.Index != cb.Index)
        {
            throw new ArgumentException(
                $"{aName} and {bName} partially overlap (offsets {ca.Index} and {cb.Index}); pass the same view to run in place, or disjoint views.", aName);
        }
    }

    /// <summary>Whether two views share memory.</summary>
    public static bool Overlap<T>(ArrayView<T> a, ArrayView<T> b)
        where T : unmanaged
    {
        if (!a.IsValid || !b.IsValid || a.Length == 0 || b.Length == 0)
            return false;
        IContiguousArrayView ca = a, cb = b;
        return ca.Buffer == cb.Buffer && ca.Index < cb.Index + b.Length && cb.Index < ca.Index + a.Length;
    }

    /// <summary><paramref name="value"/> must lie in [<paramref name="min"/>, <paramref name="max"/>].</summary>
    public static void InRange(double value, double min, double max, string name)
    {
        if (!(value >= min && value <= max))
            throw new ArgumentException($"{name} must be in [{min}, {max}], got {value}.", name);
    }

    /// <summary>A product of sizes that must fit the 32-bit indices the kernels use.</summary>
    public static int Product(string shape, params int[] sizes)
    {
        long product = 1;
        foreach (var size in sizes)
        {
            if (size <= 0)
                throw new ArgumentException($"Every size of {shape} must be positive, got [{string.Join(", ", sizes)}].");
            product *= size;
            if (product > int.MaxValue)
                throw new ArgumentException($"{shape} = [{string.Join(", ", sizes)}] has more than {int.MaxValue} elements; kernels index with 32 bits.");
        }
        return (int)product;
    }
}
