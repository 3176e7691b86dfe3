namespace GpuTransformer.Kernels.Reference;

/// <summary>
/// Plain C# twin of <see cref="ActivationKernels"/>, computing in double from the definitions
/// (its own erf, not <see cref="ActivationFunctions"/>' float approximation).
/// </summary>
public static class ActivationsReference
{
    private const double GeluCubic = 0.044715;
    private static readonly double SqrtTwoOverPi = Math.Sqrt(2 / Math.PI);
    private static readonly double InvSqrtTwo = 1 / Math.Sqrt(2);
    private static readonly double InvSqrtTwoPi = 1 / Math.Sqrt(2 * Math.PI);

    /// <summary>f(input[i]) rounded to float.</summary>
    public static float[] Forward(ReadOnlySpan<float> input, Activation activation) =>
        Precision.ToFloat(Forward(Precision.ToDouble(input), activation));

    /// <summary><see cref="Forward(ReadOnlySpan{float}, Activation)"/> in double throughout (for finite differences).</summary>
    public static double[] Forward(ReadOnlySpan<double> input, Activation activation)
    {
        var output = new double[input.Length];
        for (var i = 0; i < input.Length; i++)
            output[i] = Apply(activation, input[i]);
        return output;
    }

    /// <summary>dOutput[i] · f'(input[i]) rounded to float.</summary>
    public static float[] Backward(ReadOnlySpan<float> dOutput, ReadOnlySpan<float> input, Activation activation) =>
        Precision.ToFloat(Backward(Precision.ToDouble(dOutput), Precision.ToDouble(input), activation));

    /// <summary><see cref="Backward(ReadOnlySpan{float}, ReadOnlySpan{float}, Activation)"/> in double throughout.</summary>
    public static double[] Backward(ReadOnlySpan<double> dOutput, ReadOnlySpan<double> input, Activation activation)
    {
        var dInput = new double[input.Length];
        for (var i = 0; i < input.Length; i++)
            dInput[i] = dOutput[i] * Derivative(activation, input[i]);
        return dInput;
    }

    /// <summary>f(x) in double.</summary>
    public static double Apply(Activation activation, double x) => activation switch
    {
        Activation.None => x,
        Activation.Relu => x > 0 ? x : 0,
        Activation.Gelu => 0.5 * x * (1 + Math.Tanh(SqrtTwoOverPi * (x + GeluCubic * x * x * x))),
        Activation.GeluExact => x * NormalCdf(x),
        _ => throw new ArgumentOutOfRangeException(nameof(activation)),
    };

    /// <summary>f'(x) in double (ReLU: 0 at x = 0, as PyTorch).</summary>
    public static double Derivative(Activation activation, double x)
    {
        switch (activation)
        {
            case Activation.None:
                return 1;
            case Activation.Relu:
                return x > 0 ? 1 : 0;
            case Activation.Gelu:
                var tanh = Math.Tanh(SqrtTwoOverPi * (x + GeluCubic * x * x * x));
                var dInner = SqrtTwoOverPi * (1 + 3 * GeluCubic * x * x);
                return 0.5 * (1 + tanh) + 0.5 * x * (1 - tanh * tanh) * dInner;
            case Activation.GeluExact:
                return NormalCdf(x) + x * InvSqrtTwoPi * Math.Exp(-0.5 * x * x);
            default:
                throw new ArgumentOutOfRangeException(nameof(activation));
        }
    }

    /// <summary>Φ(x) = ½·erfc(−x/√2), accurate in the lower tail too.</summary>
    public static double NormalCdf(double x) => 0.5 * Erfc(-x * InvSqrtTwo);

    /// <summary>erf(x) to ~1e-15.</summary>
    public static double Erf(double x) => x < 0 ? -Erf(-x) : x < 2 ? ErfSeries(x) : 1 - ErfcContinuedFraction(x);

    /// <summary>erfc(x) = 1 − erf(x), to ~1e-14 relative in the upper tail.</summary>
    public static double Erfc(double x) => x < 0 ? 2 - Erfc(-x) : x < 2 ? 1 - ErfSeries(x) : ErfcContinuedFraction(x);

    // erf(x) = 2/√π · e^(−x²) · Σ 2ⁿ x^(2n+1) / (1·3·…·(2n+1)): all terms positive, no cancellation.
    private static double ErfSeries(double x)
    {
        double term = x, sum = x;
        for (var n = 1; n < 200 && term > 1e-17 * sum; n++)
        {
            term *= 2 * x * x / (2 * n + 1);
            sum += term;
        }
        return 2 / Math.Sqrt(Math.PI) * Math.Exp(-x * x) * sum;
    }

    // erfc(x) = e^(−x²)/√π · 1/(x + ½/(x + 1/(x + 3⁄2/(x + …)))), evaluated from the tail; 120 terms suffice for x ≥ 2.
    private static double ErfcContinuedFraction(double x)
    {
        var fraction = x;
        for (var k = 120; k >= 1; k--)
            fraction = x + k / 2.0 / fraction;
        return Math.Exp(-x * x) / Math.Sqrt(Math.PI) / fraction;
    }
}
