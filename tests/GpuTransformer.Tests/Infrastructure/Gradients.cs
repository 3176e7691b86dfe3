using Xunit;

namespace GpuTransformer.Tests.Infrastructure;

/// <summary>Checks of backward references and bitwise reproducibility shared by kernel tests.</summary>
public static class Gradients
{
    /// <summary>
    /// Asserts that <paramref name="analytic"/>[i] is within <paramref name="atol"/> of the central
    /// difference (L(x + h·eᵢ) − L(x − h·eᵢ)) / 2h of the double-valued <paramref name="loss"/>.
    /// </summary>
    public static void AssertMatchFiniteDifferences(float[] x, Func<float[], double> loss, ReadOnlySpan<float> analytic, float h, double atol, string what)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(loss);
        Assert.Equal(x.Length, analytic.Length);
        for (var i = 0; i < x.Length; i++)
        {
            var plus = (float[])x.Clone();
            var minus = (float[])x.Clone();
            plus[i] += h;
            minus[i] -= h;
            var numeric = (loss(plus) - loss(minus)) / (2.0 * h);
            Assert.True(Math.Abs(numeric - analytic[i]) <= atol, $"{what}[{i}]: analytic {analytic[i]:g9}, numeric {numeric:g9}");
        }
    }

    /// <summary>The bit patterns of <paramref name="values"/>, for bit-for-bit comparisons (NaN and −0 included).</summary>
    public static int[] Bits(IEnumerable<float> values) => values.Select(BitConverter.SingleToInt32Bits).ToArray();
}
