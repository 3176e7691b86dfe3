using GpuTransformer.Kernels.Profiling;

namespace GpuTransformer.Tests.Layers;

/// <summary>
/// The attention layers give the same output and gradients through either attention path, each
/// forced by <see cref="KernelTuning.UnfusedAttentionMaxLength"/> (0: fused; int.MaxValue:
/// unfused in training mode), so both stay tested whatever the measured crossover of a backend is.
/// Same parameters on both devices; output, input gradients and every parameter gradient within
/// 2e-5 + 1e-4·|fused|. The profiler confirms which path ran: unfused only in training mode.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class AttentionPathTests(Devices devices)
{
    private const double Atol = 2e-5;
    private const double Rtol = 1e-4;

    // B 2, T 7 (odd), S 5, E 16, 2 heads of 8.
    private const int B = 2;
    private const int T = 7;
    private const int S = 5;
    private const int E = 16;
    private const int H = 2;

    public static TheoryData<string, bool> BackendsAndCausal => Devices.BackendsTimes(false, true);

    [Theory]
    [MemberData(nameof(BackendsAndCausal))]
    public void Self_attention_with_key_padding_is_the_same_fused_and_unfused(string backend, bool causal)
    {
        int[] padding = [0, 0, 0, 0, 0, 0, 0, /* second sequence: */ 0, 0, 1, 0, 0, 1, 1];
        var results = Paths(backend).Select(device =>
        {
            using var layer = new SelfAttention(device, E, H, causal, new ParameterInitializer(21));
            LayerGradientTests.RandomiseBiases(layer, 22);
            using var x = Tensor<float>.FromArray(device, TestTensors.Random(23, B * T * E), B, T, E);
            using var mask = Tensor<int>.FromArray(device, padding, B, T);
            using var dy = Tensor<float>.FromArray(device, TestTensors.Random(24, B * T * E), B, T, E);
            return Run(device, layer, () => layer.Forward(x, mask), () => [("dx", layer.Backward(dy).ToArray())]);
        }).ToList();
        AssertSame(results[0], results[1]);
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Cross_attention_with_memory_padding_is_the_same_fused_and_unfused(string backend)
    {
        int[] padding = [0, 0, 0, 0, 1, /* second sequence: */ 0, 0, 1, 1, 1];
        var results = Paths(backend).Select(device =>
        {
            using var layer = new CrossAttention(device, E, H, new ParameterInitializer(25));
            LayerGradientTests.RandomiseBiases(layer, 26);
            using var query = Tensor<float>.FromArray(device, TestTensors.Random(27, B * T * E), B, T, E);
            using var memory = Tensor<float>.FromArray(device, TestTensors.Random(28, B * S * E), B, S, E);
            using var mask = Tensor<int>.FromArray(device, padding, B, S);
            using var dy = Tensor<float>.FromArray(device, TestTensors.Random(29, B * T * E), B, T, E);
            return Run(device, layer, () => layer.Forward(query, memory, mask), () =>
            {
                var (dQuery, dMemory) = layer.Backward(dy);
                return [("dQuery", dQuery.ToArray()), ("dMemory", dMemory.ToArray())];
            });
        }).ToList();
        AssertSame(results[0], results[1]);
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Evaluation_mode_runs_fused_even_where_training_runs_unfused(string backend)
    {
        var device = Paths(backend)[1];
        using var layer = new SelfAttention(device, E, H, causal: true, new ParameterInitializer(31));
        using var x = Tensor<float>.FromArray(device, TestTensors.Random(32, B * T * E), B, T, E);
        float[] training, evaluation;
        var profiler = KernelProfiler.Attach(device);
        try
        {
            profiler.Start();
            training = layer.Forward(x).ToArray();
            profiler.Stop(1);
            Assert.Equal(["unfused forward"], AttentionKernels(profiler));

            profiler = KernelProfiler.Attach(device);
            profiler.Start();
            using (layer.EvaluationMode())
                evaluation = layer.Forward(x).ToArray();
            profiler.Stop(1);
            Assert.Equal(["forward"], AttentionKernels(profiler));
        }
        finally
        {
            profiler.Detach();
        }
        TestTensors.AssertClose(training, evaluation, Atol, Rtol, "training (unfused) vs evaluation (fused) output");
    }

    /// <summary>The backend's device forced fused, then forced unfused.</summary>
    private ComputeDevice[] Paths(string backend)
    {
        var tuning = devices.Get(backend).Tuning;
        return [devices.Get(backend, tuning with { UnfusedAttentionMaxLength = 0 }), devices.Get(backend, tuning with { UnfusedAttentionMaxLength = int.MaxValue })];
    }

    /// <summary>Output, the backward's input gradients and every parameter gradient, named; asserts which attention path each pass ran.</summary>
    private static List<(string Name, float[] Values)> Run(ComputeDevice device, Module layer, Func<Tensor<float>> forward, Func<List<(string, float[])>> backward)
    {
        string[] expected = device.Tuning.UnfusedAttentionMaxLength == 0
            ? ["backward dK/dV", "backward dQ", "backward rowsum(dO∘O)", "forward"]
            : ["unfused backward", "unfused forward"];
        var profiler = KernelProfiler.Attach(device);
        try
        {
            profiler.Start();
            List<(string Name, float[] Values)> result = [("y", forward().ToArray())];
            layer.ZeroGradients();
            result.AddRange(backward());
            profiler.Stop(1);
            Assert.Equal(expected, AttentionKernels(profiler));
            result.AddRange(layer.Parameters().Select(p => ($"d{p.Name}", p.Gradient.ToArray())));
            return result;
        }
        finally
        {
            profiler.Detach();
        }
    }

    private static string[] AttentionKernels(KernelProfiler profiler) =>
        profiler.Report("attention path").Entries.Where(e => e.Family == "Attention").Select(e => e.Kernel).Distinct().Order(StringComparer.Ordinal).ToArray();

    private static void AssertSame(List<(string Name, float[] Values)> fused, List<(string Name, float[] Values)> unfused)
    {
        Assert.Equal(fused.Select(r => r.Name), unfused.Select(r => r.Name));
        for (var i = 0; i < fused.Count; i++)
        {
            TestTensors.AssertClose(fused[i].Values, unfused[i].Values, Atol, Rtol, $"{fused[i].Name}: unfused vs fused");
            Assert.Contains(fused[i].Values, v => v != 0f);
        }
    }
}
