using Xunit.Sdk;

namespace GpuTransformer.Tests.Infrastructure;

/// <summary>Central finite differences in double, to check the references' backward passes.</summary>
public static class FiniteDifferences
{
    /// <summary>∂f/∂x_i ≈ (f(x + h·e_i) − f(x − h·e_i)) / 2h for every i.</summary>
    public static double[] Gradient(Func<double[], double> f, double[] x, double h = 1e-5)
    {
        ArgumentNullException.ThrowIfNull(f);
        ArgumentNullException.ThrowIfNull(x);
        var gradient = new double[x.Length];
        var probe = (double[])x.Clone();
        for (var i = 0; i < x.Length; i++)
        {
            probe[i] = x[i] + h;
            var up = f(probe);
            probe[i] = x[i] - h;
            var down = f(probe);
            probe[i] = x[i];
            gradient[i] = (up - down) / (2 * h);
        }
        return gradient;
    }

    /// <summary>
    /// Asserts |analytic − numeric| ≤ atol + rtol·|numeric| everywhere, with NaN and ±∞ only
    /// where the numeric gradient has the same (<see cref="TestTensors.Matches"/>).
    /// </summary>
    public static void AssertClose(ReadOnlySpan<double> numeric, ReadOnlySpan<double> analytic, double atol, double rtol, string what)
    {
        if (numeric.Length != analytic.Length)
            throw new XunitException($"{what}: {numeric.Length} numeric vs {analytic.Length} analytic values.");
        for (var i = 0; i < numeric.Length; i++)
        {
            if (!TestTensors.Matches(numeric[i], analytic[i], atol, rtol))
                throw new XunitException($"{what}: at [{i}] analytic {analytic[i]:g10} vs finite difference {numeric[i]:g10} (atol {atol:g3}, rtol {rtol:g3}).");
        }
    }

    /// <summary>Σ_i w_i·y_i: a scalar loss whose gradient with respect to y is w.</summary>
    public static double Dot(ReadOnlySpan<double> weights, ReadOnlySpan<double> values)
    {
        var sum = 0.0;
        for (var i = 0; i < values.Length; i++)
            sum += weights[i] * values[i];
        return sum;
    }

    /// <summary>Random doubles in [-scale, scale) from a fixed seed.</summary>
    public static double[] Random(int seed, int count, double scale = 1)
    {
        var random = new Random(seed);
        var values = new double[count];
        for (var i = 0; i < count; i++)
            values[i] = (random.NextDouble() * 2 - 1) * scale;
        return values;
    }
}
