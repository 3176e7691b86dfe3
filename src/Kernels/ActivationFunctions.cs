namespace GpuTransformer.Kernels;

/// <summary>Activation of a feed-forward layer or a matmul epilogue.</summary>
public enum Activation
{
    /// <summary>Identity.</summary>
    None = 0,

    /// <summary>max(0, x), the paper's choice.</summary>
    Relu = 1,

    /// <summary>GELU, tanh form: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (PyTorch <c>approximate='tanh'</c>, GPT-2).</summary>
    Gelu = 2,

    /// <summary>GELU, exact erf form: x·Φ(x) (PyTorch's default <c>nn.GELU()</c> / <c>activation="gelu"</c>).</summary>
    GeluExact = 3,
}

/// <summary>
/// Scalar activation functions and derivatives, callable inside kernels and on the host
/// (the same code runs in the matmul epilogue, the activation kernels and the references).
/// </summary>
internal static class ActivationFunctions
{
    private const float SqrtTwoOverPi = 0.7978845608028654f;
    private const float GeluCubic = 0.044715f;
    private const float InvSqrtTwo = 0.7071067811865476f;
    private const float InvSqrtTwoPi = 0.3989422804014327f;

    /// <summary>f(x) for <paramref name="activation"/> (an int so kernels can take it as a plain argument).</summary>
    public static float Apply(int activation, float x) => activation switch
    {
        (int)Activation.Relu => Relu(x),
        (int)Activation.Gelu => Gelu(x),
        (int)Activation.GeluExact => GeluExact(x),
        _ => x,
    };

    /// <summary>f'(x) for <paramref name="activation"/>.</summary>
    public static float Derivative(int activation, float x) => activation switch
    {
        (int)Activation.Relu => x > 0f ? 1f : 0f,
        (int)Activation.Gelu => GeluDerivative(x),
        (int)Activation.GeluExact => GeluExactDerivative(x),
        _ => 1f,
    };

    /// <summary>max(x, 0).</summary>
    public static float Relu(float x) => x > 0f ? x : 0f;

    /// <summary>GELU, tanh approximation (PyTorch's <c>approximate='tanh'</c>): ½x(1 + tanh(√(2/π)(x + 0.044715x³))).</summary>
    public static float Gelu(float x)
    {
        var inner = SqrtTwoOverPi * (x + GeluCubic * x * x * x);
        return 0.5f * x * (1f + Tanh(inner));
    }

    /// <summary>d/dx of <see cref="Gelu"/>.</summary>
    public static float GeluDerivative(float x)
    {
        var x2 = x * x;
        var inner = SqrtTwoOverPi * (x + GeluCubic * x2 * x);
        // sech² = 1 − tanh² = 4e/(1 + e)² with e = exp(−2|inner|): no cancellation where tanh
        // saturates (1 − tanh² there amplifies a 1-ulp tanh error by ~x³).
        var e = MathF.Exp(-2f * MathF.Abs(inner));
        var tanh = TanhFrom(e, inner);
        var sech2 = 4f * e / ((1f + e) * (1f + e));
        return 0.5f * (1f + tanh) + 0.5f * x * sech2 * SqrtTwoOverPi * (1f + 3f * GeluCubic * x2);
    }

    /// <summary>
    /// tanh(x) = sign(x)·(1 − e)/(1 + e), e = exp(−2|x|). Not <c>MathF.Tanh</c>: without
    /// libdevice ILGPU lowers that to CUDA's <c>tanh.approx.f32</c> (relative error ≈ 2⁻¹¹).
    /// </summary>
    public static float Tanh(float x) => TanhFrom(MathF.Exp(-2f * MathF.Abs(x)), x);

    private static float TanhFrom(float e, float x)
    {
        var magnitude = (1f - e) / (1f + e);
        return x < 0f ? -magnitude : magnitude;
    }

    /// <summary>Exact GELU: x·Φ(x).</summary>
    public static float GeluExact(float x) => x * NormalCdf(x);

    /// <summary>d/dx of <see cref="GeluExact"/>: Φ(x) + x·φ(x).</summary>
    public static float GeluExactDerivative(float x) => NormalCdf(x) + x * InvSqrtTwoPi * MathF.Exp(-0.5f * x * x);

    /// <summary>Φ(x) = ½(1 + erf(x/√2)).</summary>
    public static float NormalCdf(float x) => 0.5f * (1f + Erf(x * InvSqrtTwo));

    /// <summary>
    /// erf(x) by Abramowitz &amp; Stegun 7.1.26 (|error| ≤ 1.5e-7), since ILGPU has no erf
    /// intrinsic on every backend.
    /// </summary>
    public static float Erf(float x)
    {
        var sign = x < 0f ? -1f : 1f;
        var a = MathF.Abs(x);
        var t = 1f / (1f + 0.3275911f * a);
        var polynomial = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
        return sign * (1f - polynomial * MathF.Exp(-a * a));
    }
}
