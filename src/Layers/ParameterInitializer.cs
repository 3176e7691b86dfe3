namespace GpuTransformer.Layers;

/// <summary>
/// PyTorch's initialisation schemes, drawn on the host from one seeded random-number generator in the order
/// the layers create their parameters (so a model's weights are a function of its seed). The
/// distributions are PyTorch's; the numbers are not (a different random-number generator).
/// </summary>
public sealed class ParameterInitializer
{
    private readonly Random random;

    /// <summary>A random-number generator seeded with <paramref name="seed"/>.</summary>
    public ParameterInitializer(int seed) => random = new Random(seed);

    /// <summary>
    /// N(0, std²) — <c>nn.Embedding</c>'s default with std 1: a standard normal draw rounded to
    /// float, times <paramref name="std"/> in float (so a table drawn with std s is, bit for bit,
    /// an N(0, 1) table scaled by s).
    /// </summary>
    public void Normal(Parameter parameter, float std = 1f) => Fill(parameter, () =>
    {
        // Box–Muller; 1 − u keeps the logarithm finite.
        var u = 1.0 - random.NextDouble();
        var v = random.NextDouble();
        return (float)(Math.Sqrt(-2.0 * Math.Log(u)) * Math.Cos(2.0 * Math.PI * v)) * std;
    });

    /// <summary>U(−bound, bound).</summary>
    public void Uniform(Parameter parameter, double bound) =>
        Fill(parameter, () => (float)(((2.0 * random.NextDouble()) - 1.0) * bound));

    /// <summary>Every element <paramref name="value"/> (LayerNorm: weight 1, bias 0; attention biases 0).</summary>
    public static void Constant(Parameter parameter, float value)
    {
        ArgumentNullException.ThrowIfNull(parameter);
        var values = new float[parameter.Value.Length];
        Array.Fill(values, value);
        parameter.Value.CopyFrom(values);
    }

    /// <summary>
    /// <c>nn.init.xavier_uniform_</c>: U(±√(6 / (fan_in + fan_out))) for a weight [out, in]
    /// (fan_in = in, fan_out = out).
    /// </summary>
    public void XavierUniform(Parameter parameter)
    {
        var (fanIn, fanOut) = Fans(parameter);
        Uniform(parameter, Math.Sqrt(6.0 / (fanIn + fanOut)));
    }

    /// <summary>
    /// <c>nn.init.kaiming_uniform_(a=√5)</c>, <c>nn.Linear</c>'s weight default: gain √(2 / (1 + a²)) = √(1/3),
    /// bound gain·√(3 / fan_in) = 1/√fan_in.
    /// </summary>
    public void KaimingUniform(Parameter parameter) => Uniform(parameter, 1.0 / Math.Sqrt(Fans(parameter).FanIn));

    private static (int FanIn, int FanOut) Fans(Parameter parameter)
    {
        ArgumentNullException.ThrowIfNull(parameter);
        if (parameter.Shape.Count != 2)
            throw new ArgumentException($"Fan-based initialisation needs a 2-D weight; {parameter.Name} has shape {Tensor<float>.Describe(parameter.Shape)}.", nameof(parameter));
        return (parameter.Shape[1], parameter.Shape[0]);
    }

    private static void Fill(Parameter parameter, Func<float> draw)
    {
        ArgumentNullException.ThrowIfNull(parameter);
        var values = new float[parameter.Value.Length];
        for (var i = 0; i < values.Length; i++)
            values[i] = draw();
        parameter.Value.CopyFrom(values);
    }
}
