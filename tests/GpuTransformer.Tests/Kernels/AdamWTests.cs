namespace GpuTransformer.Tests.Kernels;

[Collection(DeviceCollection.Name)]
public sealed class AdamWTests(Devices devices)
{
    // After 6 steps of lr 1e-2 the float kernel and the double reference (both storing float state)
    // differ by a few ulp: parameters ~1 → 1e-6 absolute; v relative 1e-5. A wrong bias
    // correction or decay term moves parameters by ≥ 1e-4.
    private const double ParameterAtol = 1e-6;

    private sealed class State(int count, int seed)
    {
        public float[] Parameters { get; } = TestTensors.Random(seed, count);
        public float[] First { get; } = new float[count];
        public float[] Second { get; } = new float[count];
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Several_steps_match_torch_semantics(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<AdamWKernels>();
        foreach (var (n, weightDecay, gradScale) in new[] { (1, 0.0, 1f), (63, 0.1, 1f), (1000, 0.01, 0.37f) })
        {
            var expected = new State(n, n);
            using var parameters = device.Upload(expected.Parameters);
            using var first = device.Zeros<float>(n);
            using var second = device.Zeros<float>(n);
            for (var t = 1; t <= 6; t++)
            {
                // Gradients of varying scale, some exactly zero (v stays 0 on the first steps: ε matters).
                var g = TestTensors.Random(100 * n + t, n, t % 2 == 0 ? 1e-3f : 2f);
                g[0] = t <= 2 ? 0f : g[0];
                var hyper = new AdamWStep(t, LearningRate: 1e-2 * t / 6, WeightDecay: weightDecay, Beta1: 0.9, Beta2: 0.98, Epsilon: 1e-9);
                using var gradients = device.Upload(g);
                kernels.Step(parameters.View, first.View, second.View, gradients.View, n, hyper, gradScale);
                AdamWReference.Step(expected.Parameters, expected.First, expected.Second, g, hyper, gradScale);
            }
            TestTensors.AssertClose(expected.Parameters, device.Download(parameters, n), ParameterAtol, 0, $"p n={n}");
            // m mixes gradients of scale 2 and 1e-3 with both signs: it cancels, so its error is absolute (ulps of ~0.2).
            TestTensors.AssertClose(expected.First, device.Download(first, n), 1e-7, 1e-5, $"m n={n}");
            TestTensors.AssertClose(expected.Second, device.Download(second, n), 1e-12, 1e-5, $"v n={n}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Device_side_gradient_scale_equals_the_host_scale(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<AdamWKernels>();
        const int n = 33;
        const float scale = 0.25f;
        var p = TestTensors.Random(1, n);
        var g = TestTensors.Random(2, n);
        var hyper = new AdamWStep(3, 1e-3);
        using var hostScaled = device.Upload(p);
        using var deviceScaled = device.Upload(p);
        using var gradients = device.Upload(g);
        using var m1 = device.Upload(TestTensors.Random(3, n, 0.1f));
        using var v1 = device.Upload(TestTensors.Random(4, n, 0.1f).Select(MathF.Abs).ToArray());
        using var m2 = device.Upload(device.Download(m1));
        using var v2 = device.Upload(device.Download(v1));
        using var factor = device.Upload(new[] { scale });
        kernels.Step(hostScaled.View, m1.View, v1.View, gradients.View, n, hyper, scale);
        kernels.Step(deviceScaled.View, m2.View, v2.View, gradients.View, n, hyper, factor.View);
        Assert.Equal(device.Download(hostScaled, n), device.Download(deviceScaled, n));
        Assert.Equal(device.Download(v1, n), device.Download(v2, n));
    }

    /// <summary>
    /// Five steps of torch.optim.AdamW from tests/golden (float64): zero gradients (pure decay),
    /// ~1e-10 gradients (ε dominates), ~1e3 gradients. Parameters after every step within 1e-6
    /// (measured ≤ 2.4e-7); moments relative 1e-5 (measured ≤ 9e-7).
    /// </summary>
    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Five_steps_match_PyTorch_golden_file(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<AdamWKernels>();
        var file = GoldenFilesTests.Load("adamw");
        double Hyper(string key) => double.Parse(file.Metadata[key], System.Globalization.CultureInfo.InvariantCulture);
        var initial = file.Floats("params0");
        var n = initial.Length;
        var grads = file.Floats("grads");
        var after = file.Floats("params");
        using var parameters = device.Upload(initial);
        using var first = device.Zeros<float>(n);
        using var second = device.Zeros<float>(n);
        using var gradients = device.Zeros<float>(n);
        for (var t = 1; t <= (int)Hyper("steps"); t++)
        {
            gradients.View.SubView(0, n).CopyFromCPU(device.Stream, grads.AsSpan((t - 1) * n, n));
            var hyper = new AdamWStep(t, Hyper("lr"), Hyper("weight_decay"), Hyper("beta1"), Hyper("beta2"), Hyper("eps"));
            kernels.Step(parameters.View, first.View, second.View, gradients.View, n, hyper);
            TestTensors.AssertClose(after.AsSpan((t - 1) * n, n), device.Download(parameters, n), 1e-6, 1e-6, $"params after step {t}");
        }
        TestTensors.AssertClose(file.Floats("m"), device.Download(first, n), 0, 1e-5, "m");
        TestTensors.AssertClose(file.Floats("v"), device.Download(second, n), 0, 1e-5, "v");
    }

    [Fact]
    public void Reference_first_step_is_lr_times_sign_of_the_gradient()
    {
        // Step 1 from zero moments: m̂ = g, v̂ = g², so p ← p(1 − lr·λ) − lr·g/(|g| + ε).
        float[] p = [1f, -2f, 0.5f];
        float[] g = [0.3f, -4f, 1e-3f];
        var hyper = new AdamWStep(1, LearningRate: 0.1, WeightDecay: 0.5, Epsilon: 0);
        AdamWReference.Step(p, new float[3], new float[3], g, hyper);
        Assert.Equal(1f * 0.95f - 0.1f, p[0], 6);
        Assert.Equal(-2f * 0.95f + 0.1f, p[1], 6);
        Assert.Equal(0.5f * 0.95f - 0.1f, p[2], 6);
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Bad_arguments_throw_before_launch(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<AdamWKernels>();
        using var p = device.Zeros<float>(8);
        using var m = device.Zeros<float>(8);
        using var v = device.Zeros<float>(8);
        using var g = device.Zeros<float>(8);
        var ok = new AdamWStep(1, 1e-3);
        foreach (var bad in new[]
        {
            ok with { Step = 0 }, ok with { LearningRate = -1 }, ok with { LearningRate = double.NaN }, ok with { Beta1 = 1 },
            ok with { Beta2 = -0.1 }, ok with { Epsilon = -1e-8 }, ok with { WeightDecay = double.PositiveInfinity },
        })
        {
            Assert.Throws<ArgumentException>(() => kernels.Step(p.View, m.View, v.View, g.View, 8, bad));
        }
        var error = Assert.Throws<ArgumentException>(() => kernels.Step(p.View, m.View, v.View, g.View.SubView(0, 4), 8, ok));
        Assert.Contains("gradients has 4 elements", error.Message);
        error = Assert.Throws<ArgumentException>(() => kernels.Step(p.View, p.View, v.View, g.View, 8, ok));
        Assert.Contains("overlap", error.Message);
        Assert.Throws<ArgumentException>(() => kernels.Step(p.View, m.View, v.View, g.View, 0, ok));
        Assert.Throws<ArgumentException>(() => kernels.Step(p.View, m.View, v.View, g.View, 8, ok, float.NaN));
        Assert.Throws<ArgumentException>(() => kernels.Step(p.View, m.View, v.View, g.View, 8, ok, g.View.SubView(0, 0)));
    }
}
