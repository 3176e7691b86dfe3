using Xunit.Sdk;

namespace GpuTransformer.Tests.Layers;

/// <summary>
/// Finite-difference checks of a layer's hand-written backward. The scalar loss is
/// L = Σ y·R for the layer's output y and a fixed random R, so dL/dy = R: the test runs the
/// backward with dOutput = R and compares the gradients it produced (input gradients and
/// accumulated parameter gradients) with central differences, each L from the layer's own
/// float32 forward summed in double. Per probed tensor g = ∂L/∂v it checks
/// <list type="bullet">
/// <item>the directional derivative along <see cref="Directions"/> random unit directions u over
/// the whole tensor: ⟨g, u⟩ against (L(v + h·u) − L(v − h·u)) / 2h — one pair of forwards covers
/// every entry (a wrong entry δ shows as δ·uᵢ; errors that cancel along one direction do not
/// along the next), which keeps the simulator's time affordable;</item>
/// <item>and single entries: (L(v + h·eᵢ) − L(v − h·eᵢ)) / 2h against gᵢ for the chosen entries.</item>
/// </list>
/// <para>
/// Error budget: the forward's float32 rounding gives L a noise of ~1e-6 on these tiny shapes,
/// so with h = 1e-2 a difference quotient is good to ~1e-4; its truncation error is
/// h²/6·L‴ ≈ 2e-5·L‴. The default tolerance |analytic − numeric| ≤ 2e-3 + 1e-2·|numeric| is
/// well above both and well below what a wrong or missing term gives (gradients here are O(0.1–1)).
/// </para>
/// </summary>
internal sealed class LayerGradientCheck(ComputeDevice device, Func<Tensor<float>> forward)
{
    private readonly List<(string Name, Tensor<float> Value, Func<float[]> Analytic, int Entries)> probes = [];

    /// <summary>Step h.</summary>
    public float Step { get; init; } = 1e-2f;

    public double AbsoluteTolerance { get; init; } = 2e-3;

    public double RelativeTolerance { get; init; } = 1e-2;

    /// <summary>Random directions each probed tensor is checked along.</summary>
    public int Directions { get; init; } = 1;

    /// <summary>
    /// A discrete state of the forward that must not change between v − h and v + h for a
    /// difference to be valid (e.g. the signs of ReLU pre-activations); differences where it
    /// does are skipped (at most a quarter of them).
    /// </summary>
    public Func<int[]>? Pattern { get; init; }

    /// <summary>Differences checked and skipped by the last <see cref="Run"/>.</summary>
    public (int Checked, int Skipped) Counts { get; private set; }

    /// <summary>
    /// Checks <paramref name="value"/>'s gradient <paramref name="analytic"/> (read after the
    /// backward) along <see cref="Directions"/> random directions and at <paramref name="entries"/> random entries (−1: all).
    /// </summary>
    public LayerGradientCheck Probe(string name, Tensor<float> value, Func<float[]> analytic, int entries = 4)
    {
        probes.Add((name, value, analytic, entries));
        return this;
    }

    /// <summary>Checks a parameter's gradient along a random direction and at <paramref name="entries"/> random entries.</summary>
    public LayerGradientCheck Probe(Parameter parameter, int entries = 1) =>
        Probe(parameter.Name, parameter.Value, parameter.Gradient.ToArray, entries);

    /// <summary>Checks every parameter of <paramref name="module"/> (a direction and <paramref name="entries"/> entries each).</summary>
    public LayerGradientCheck ProbeParameters(Module module, int entries = 1)
    {
        foreach (var parameter in module.Parameters())
            Probe(parameter, entries);
        return this;
    }

    /// <summary>
    /// Runs the forward, then <paramref name="backward"/> with dOutput = R (parameter gradients
    /// zeroed first), then the differences for every probe.
    /// </summary>
    public void Run(Module module, Action<Tensor<float>> backward, int seed = 7)
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentNullException.ThrowIfNull(backward);
        var output = forward();
        var weights = Random(seed, output.Length);
        using var dOutput = Tensor<float>.FromArray(device, weights, [.. output.Shape]);
        module.ZeroGradients();
        backward(dOutput);
        var analytic = probes.Select(p => p.Analytic()).ToList();
        var basePattern = Pattern?.Invoke();
        var random = new Random(seed + 1);

        var (checkedCount, skipped) = (0, 0);
        for (var p = 0; p < probes.Count; p++)
        {
            var (name, value, _, entries) = probes[p];
            var values = value.ToArray();
            var gradient = analytic[p];

            // Along random unit directions u.
            for (var k = 0; k < Directions; k++)
            {
                var direction = Random(random.Next(), values.Length);
                var norm = Math.Sqrt(direction.Sum(d => (double)d * d));
                var projected = 0.0;
                for (var i = 0; i < values.Length; i++)
                {
                    direction[i] = (float)(direction[i] / norm);
                    projected += (double)gradient[i] * direction[i];
                }
                Compare($"⟨d/d{name}, u{k}⟩", projected, Difference(value, values, direction));
            }

            var indices = entries < 0 || entries >= values.Length
                ? Enumerable.Range(0, values.Length)
                : Enumerable.Range(0, entries).Select(_ => random.Next(values.Length)).Distinct();
            foreach (var i in indices)
            {
                var unit = new float[values.Length];
                unit[i] = 1f;
                Compare($"d/d{name}[{i}]", gradient[i], Difference(value, values, unit));
            }
        }
        Counts = (checkedCount, skipped);
        if (skipped * 4 > checkedCount + skipped)
            throw new XunitException($"{skipped} of {checkedCount + skipped} differences crossed a kink; choose other values.");

        // (L(v + h·u) − L(v − h·u)) / 2h, or null when the forward's pattern changed in between.
        double? Difference(Tensor<float> value, float[] values, float[] u)
        {
            var (up, upPattern) = Loss(value, values.Select((v, i) => v + (Step * u[i])).ToArray(), weights);
            var (down, downPattern) = Loss(value, values.Select((v, i) => v - (Step * u[i])).ToArray(), weights);
            value.CopyFrom(values);
            if (basePattern is not null && (!basePattern.SequenceEqual(upPattern!) || !basePattern.SequenceEqual(downPattern!)))
                return null;
            return (up - down) / (2.0 * Step);
        }

        void Compare(string what, double analyticValue, double? numeric)
        {
            if (numeric is not { } n)
            {
                skipped++;
                return;
            }
            checkedCount++;
            if (!(Math.Abs(analyticValue - n) <= AbsoluteTolerance + (RelativeTolerance * Math.Abs(n))))
                throw new XunitException($"{what}: backward {analyticValue:g6}, finite difference {n:g6} (h {Step}, atol {AbsoluteTolerance}, rtol {RelativeTolerance}).");
        }
    }

    private (double Loss, int[]? Pattern) Loss(Tensor<float> value, float[] values, float[] weights)
    {
        value.CopyFrom(values);
        var output = forward().ToArray();
        var sum = 0.0;
        for (var j = 0; j < output.Length; j++)
            sum += (double)output[j] * weights[j];
        return (sum, Pattern?.Invoke());
    }

    public static float[] Random(int seed, int count, float scale = 1f)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => (float)(((random.NextDouble() * 2) - 1) * scale)).ToArray();
    }
}
