using GpuTransformer.Training.Optimization;

namespace GpuTransformer.Tests.Training;

/// <summary>
/// The optimizer against the C# references (<see cref="AdamWReference"/>, <see cref="ReductionReference"/>)
/// on parameters laid out three ways: each in its own buffers (a launch per tensor), packed (two runs:
/// weight-decayed and not), and a subset of a pack (every other parameter: runs must not merge over
/// a parameter outside the set, which must stay untouched). Three steps with clipping active and
/// weight decay on the decayed tensors only; tolerance 1e-6 (float kernels against the double reference
/// storing float state).
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class AdamWOptimizerTests(Devices devices)
{
    private const double Tolerance = 1e-6;
    private static readonly AdamWOptions Options = new() { WeightDecay = 0.1, MaxGradNorm = 0.5 };

    public static TheoryData<string, string> BackendsAndLayouts => Devices.BackendsTimes("own buffers", "packed", "every other of a pack");

    [Theory]
    [MemberData(nameof(BackendsAndLayouts))]
    public void Steps_match_the_reference_in_every_layout(string backend, string layout)
    {
        var device = devices.Get(backend);
        using var first = new Linear(device, 5, 3, bias: true, new ParameterInitializer(1));
        using var norm = new LayerNorm(device, 7);
        using var second = new Linear(device, 3, 2, bias: true, new ParameterInitializer(2));
        var all = first.Parameters().Concat(norm.Parameters()).Concat(second.Parameters()).ToArray();
        using var pack = layout == "own buffers" ? null : new ParameterPack(all);
        var optimized = layout == "every other of a pack" ? pack!.Parameters.Where((_, i) => i % 2 == 0).ToArray() : all;
        using var optimizer = new AdamWOptimizer(optimized, Options);
        Assert.Equal(layout switch { "own buffers" => all.Length, "packed" => 2, _ => optimized.Length }, optimizer.LaunchesPerStep);

        var expected = optimized.Select(p => (Value: p.Value.ToArray(), First: new float[p.Value.Length], Second: new float[p.Value.Length])).ToArray();
        var untouched = all.Except(optimized).Select(p => (Parameter: p, Value: p.Value.ToArray())).ToArray();
        for (var step = 1; step <= 3; step++)
        {
            var gradients = all.Select((p, i) => TestTensors.Random((100 * step) + i, p.Gradient.Length)).ToArray();
            for (var i = 0; i < all.Length; i++)
                all[i].Gradient.CopyFrom(gradients[i]);
            var ours = optimized.Select(p => gradients[Array.IndexOf(all, p)]).ToArray();
            var normBeforeClip = ReductionReference.GlobalNorm(ours);
            var clip = ReductionReference.ClipFactor(normBeforeClip, Options.MaxGradNorm);
            Assert.True(clip < 1, "the test means to clip");

            var reported = optimizer.Step(1e-2, readNorm: true);

            Assert.Equal(normBeforeClip, reported, 1e-5f);
            for (var i = 0; i < optimized.Length; i++)
            {
                var hyper = new AdamWStep(step, 1e-2, optimized[i].Decay ? Options.WeightDecay : 0, Options.Beta1, Options.Beta2, Options.Epsilon);
                AdamWReference.Step(expected[i].Value, expected[i].First, expected[i].Second, ours[i], hyper, clip);
                TestTensors.AssertClose(expected[i].Value, optimized[i].Value.ToArray(), Tolerance, 0, $"{layout}: {optimized[i].Name} after step {step}");
            }
        }
        foreach (var (parameter, value) in untouched)
            Assert.Equal(value, parameter.Value.ToArray());
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Packing_after_the_optimizer_was_built_is_refused_at_the_next_step(string backend)
    {
        var device = devices.Get(backend);
        using var layer = new Linear(device, 4, 3, bias: true, new ParameterInitializer(3));
        using var optimizer = new AdamWOptimizer(layer.Parameters());
        _ = layer.PackParameters(); // the layer owns the pack
        var error = Assert.Throws<InvalidOperationException>(() => optimizer.Step(1e-3));
        Assert.Contains("moved into a parameter pack after its optimizer was built", error.Message);
    }
}
