using Xunit.Sdk;

namespace GpuTransformer.Tests.Infrastructure;

/// <summary>
/// The assertion helpers every kernel and layer test leans on: a helper that accepts too much
/// makes every test that uses it pass for the wrong reason.
/// </summary>
public sealed class AssertionHelperTests
{
    private const double Atol = 1e-5, Rtol = 1e-4;

    public static TheoryData<float, float> Accepted => new()
    {
        { 1f, 1f },
        { 1f, 1f + 1e-4f },                               // inside atol + rtol·|expected| = 1.1e-4
        { -2f, -2f - 2e-4f },
        { 0f, 9e-6f },                                    // atol alone
        { float.PositiveInfinity, float.PositiveInfinity },
        { float.NegativeInfinity, float.NegativeInfinity },
        { float.NaN, float.NaN },
        { float.NaN, -float.NaN },                        // any NaN payload or sign
    };

    public static TheoryData<float, float> Rejected => new()
    {
        { 1f, 1f + 2e-4f },                               // outside the tolerance
        { 0f, 2e-5f },
        { float.PositiveInfinity, float.NegativeInfinity },
        { float.NegativeInfinity, float.PositiveInfinity },
        { float.PositiveInfinity, float.MaxValue },       // +∞ accepts only +∞, however large the finite value
        { float.NegativeInfinity, -1e30f },
        { float.PositiveInfinity, float.NaN },
        { 1e30f, float.PositiveInfinity },                // a finite expectation never accepts ∞
        { 1f, float.NaN },                                // NaN only where NaN is expected
        { float.NaN, 1f },
        { float.NaN, float.PositiveInfinity },
    };

    [Theory]
    [MemberData(nameof(Accepted))]
    public void Tensors_accept_values_within_tolerance_the_same_infinity_and_NaN_for_NaN(float expected, float actual)
    {
        Assert.True(TestTensors.Matches(expected, actual, Atol, Rtol));
        TestTensors.AssertClose([0.5f, expected], [0.5f, actual], Atol, Rtol, "accepted");
        FiniteDifferences.AssertClose([0.5, expected], [0.5, actual], Atol, Rtol, "accepted");
    }

    [Theory]
    [MemberData(nameof(Rejected))]
    public void Tensors_reject_values_outside_tolerance_other_infinities_and_unexpected_NaN(float expected, float actual)
    {
        Assert.False(TestTensors.Matches(expected, actual, Atol, Rtol));
        var error = Assert.Throws<XunitException>(() => TestTensors.AssertClose([0.5f, expected], [0.5f, actual], Atol, Rtol, "rejected"));
        Assert.Contains("rejected: 1 of 2 elements", error.Message);
        Assert.Contains("worst at [1]", error.Message);
        Assert.Throws<XunitException>(() => FiniteDifferences.AssertClose([0.5, expected], [0.5, actual], Atol, Rtol, "rejected"));
    }

    [Fact]
    public void The_worst_element_is_reported_and_lengths_must_agree()
    {
        var error = Assert.Throws<XunitException>(() =>
            TestTensors.AssertClose([1f, 2f, 3f, 4f], [1.1f, 2f, 3.5f, float.NaN], Atol, Rtol, "four values"));
        Assert.Contains("3 of 4 elements", error.Message);
        Assert.Contains("worst at [3]: expected 4, actual NaN", error.Message);

        error = Assert.Throws<XunitException>(() => TestTensors.AssertClose([1f, 2f], [1f], Atol, Rtol, "short"));
        Assert.Contains("short: 2 expected vs 1 actual values", error.Message);
        error = Assert.Throws<XunitException>(() => FiniteDifferences.AssertClose([1.0], [1.0, 2.0], Atol, Rtol, "long"));
        Assert.Contains("long: 1 numeric vs 2 analytic values", error.Message);
    }

    [Fact]
    public void Finite_differences_of_known_functions_are_accurate()
    {
        // f(x) = Σ sin(x_i)·x_i² has ∂f/∂x_i = cos(x_i)·x_i² + 2·x_i·sin(x_i); central differences
        // with h = 1e-5 are good to ~h²·f‴ + ε/h ≈ 1e-10.
        double[] x = [0.3, -1.2, 2.5, 0];
        var numeric = FiniteDifferences.Gradient(v => v.Sum(t => Math.Sin(t) * t * t), x);
        var exact = x.Select(t => (Math.Cos(t) * t * t) + (2 * t * Math.Sin(t))).ToArray();
        FiniteDifferences.AssertClose(numeric, exact, 1e-8, 1e-7, "sin(x)·x²");

        // A wrong analytic gradient (one term missing) is caught.
        var wrong = x.Select(t => Math.Cos(t) * t * t).ToArray();
        Assert.Throws<XunitException>(() => FiniteDifferences.AssertClose(numeric, wrong, 1e-8, 1e-7, "missing term"));

        Assert.Equal(2 * 0.3 - 1.2, FiniteDifferences.Dot([2, 1], [0.3, -1.2]), 12);
    }
}
