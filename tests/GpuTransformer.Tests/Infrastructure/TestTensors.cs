using Xunit.Sdk;

namespace GpuTransformer.Tests.Infrastructure;

/// <summary>Host-side helpers for kernel tests: random inputs, device upload/download, tolerance checks.</summary>
public static class TestTensors
{
    /// <summary>Uniform values in [-scale, scale) from a fixed seed.</summary>
    public static float[] Random(int seed, int count, float scale = 1f)
    {
        var random = new Random(seed);
        var values = new float[count];
        for (var i = 0; i < count; i++)
            values[i] = (float)((random.NextDouble() * 2 - 1) * scale);
        return values;
    }

    /// <summary>Integers in [0, max) from a fixed seed.</summary>
    public static int[] RandomInts(int seed, int count, int max)
    {
        var random = new Random(seed);
        var values = new int[count];
        for (var i = 0; i < count; i++)
            values[i] = random.Next(max);
        return values;
    }

    /// <summary>Copies <paramref name="values"/> to a new device buffer.</summary>
    public static MemoryBuffer1D<T, Stride1D.Dense> Upload<T>(this ComputeDevice device, T[] values)
        where T : unmanaged
    {
        var buffer = device.Accelerator.Allocate1D<T>(Math.Max(1, values.Length));
        if (values.Length > 0)
            buffer.View.SubView(0, values.Length).CopyFromCPU(device.Stream, values);
        return buffer;
    }

    /// <summary>A zeroed device buffer of <paramref name="count"/> elements.</summary>
    public static MemoryBuffer1D<T, Stride1D.Dense> Zeros<T>(this ComputeDevice device, int count)
        where T : unmanaged
    {
        var buffer = device.Accelerator.Allocate1D<T>(Math.Max(1, count));
        buffer.MemSetToZero(device.Stream);
        return buffer;
    }

    /// <summary>Waits for the device and copies the first <paramref name="count"/> elements (all if omitted) back.</summary>
    public static T[] Download<T>(this ComputeDevice device, ArrayView<T> view, int? count = null)
        where T : unmanaged
    {
        device.Synchronize();
        var n = count ?? (int)view.Length;
        var values = new T[n];
        if (n > 0)
            view.SubView(0, n).CopyToCPU(device.Stream, values);
        device.Synchronize();
        return values;
    }

    /// <summary>Waits for the device and copies the first <paramref name="count"/> elements (all if omitted) of a buffer back.</summary>
    public static T[] Download<T>(this ComputeDevice device, MemoryBuffer1D<T, Stride1D.Dense> buffer, int? count = null)
        where T : unmanaged => device.Download(buffer.View.AsContiguous(), count);

    /// <summary>
    /// Whether <paramref name="actual"/> stands for <paramref name="expected"/>: NaN only where NaN
    /// is expected, an expected ±∞ only as the same infinity, and otherwise a finite value with
    /// |actual − expected| ≤ atol + rtol·|expected|.
    /// </summary>
    public static bool Matches(double expected, double actual, double atol, double rtol) =>
        double.IsNaN(expected) ? double.IsNaN(actual)
        : double.IsInfinity(expected) ? actual == expected
        : Math.Abs(actual - expected) <= atol + (rtol * Math.Abs(expected)); // false for a NaN or ∞ actual

    /// <summary>
    /// Asserts <see cref="Matches"/> element by element, and reports how many failed and the
    /// worst element (index, both values) when any does.
    /// </summary>
    public static void AssertClose(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, double atol, double rtol, string what)
    {
        if (expected.Length != actual.Length)
            throw new XunitException($"{what}: {expected.Length} expected vs {actual.Length} actual values.");
        var worst = -1;
        var worstExcess = 0.0;
        var failures = 0;
        for (var i = 0; i < expected.Length; i++)
        {
            if (Matches(expected[i], actual[i], atol, rtol))
                continue;
            failures++;
            var error = Math.Abs((double)actual[i] - expected[i]);
            var excess = double.IsFinite(error) ? error - (atol + (rtol * Math.Abs(expected[i]))) : double.PositiveInfinity;
            if (worst < 0 || excess > worstExcess)
            {
                worst = i;
                worstExcess = excess;
            }
        }
        if (failures > 0)
        {
            throw new XunitException(
                $"{what}: {failures} of {expected.Length} elements outside atol {atol:g3} + rtol {rtol:g3}; " +
                $"worst at [{worst}]: expected {expected[worst]:g9}, actual {actual[worst]:g9}.");
        }
    }

    /// <summary>The largest |a − b| over two spans.</summary>
    public static double MaxAbsDifference(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        var max = 0.0;
        for (var i = 0; i < a.Length; i++)
            max = Math.Max(max, Math.Abs((double)a[i] - b[i]));
        return max;
    }
}
