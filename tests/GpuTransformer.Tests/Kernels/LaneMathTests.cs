namespace GpuTransformer.Tests.Kernels;

/// <summary>
/// <see cref="LaneMath.Exp"/>, the polynomial e^x of PoCL's row kernels, on the host (the same
/// C# the kernels compile): error in ulps against double precision, and the special values.
/// </summary>
public sealed class LaneMathTests
{
    [Fact]
    public void Exp_is_within_1_5_ulp_of_double_precision_over_the_normal_range()
    {
        var random = new Random(11);
        var worst = 0.0;
        var worstX = 0f;
        for (var i = 0; i < 400_000; i++)
        {
            // Uniform over the range, and dense near 0 where softmax arguments cluster.
            var x = i % 2 == 0
                ? (float)(LaneMath.ExpLowest + random.NextDouble() * (LaneMath.ExpHighest - LaneMath.ExpLowest))
                : (float)(random.NextDouble() * 20 - 16);
            var exact = Math.Exp(x);
            var ulp = (double)MathF.BitIncrement((float)exact) - (float)exact;
            var error = Math.Abs(LaneMath.Exp(x) - exact) / ulp;
            if (error > worst)
                (worst, worstX) = (error, x);
        }
        Assert.True(worst <= 1.5, $"worst error {worst:F2} ulp at x = {worstX:R}");
    }

    [Fact]
    public void Exp_special_values()
    {
        Assert.Equal(1f, LaneMath.Exp(0f));
        Assert.Equal(1f, LaneMath.Exp(-0f));
        Assert.Equal(0f, LaneMath.Exp(float.NegativeInfinity));
        Assert.Equal(0f, LaneMath.Exp(-88f));                       // below the smallest normal: flushed
        Assert.Equal(0f, LaneMath.Exp(float.MinValue));
        Assert.Equal(float.PositiveInfinity, LaneMath.Exp(89f));
        Assert.Equal(float.PositiveInfinity, LaneMath.Exp(float.PositiveInfinity));
        Assert.True(float.IsNaN(LaneMath.Exp(float.NaN)));
        Assert.True(float.IsNormal(LaneMath.Exp(LaneMath.ExpLowest)));
        Assert.True(float.IsFinite(LaneMath.Exp(LaneMath.ExpHighest)));
    }
}
