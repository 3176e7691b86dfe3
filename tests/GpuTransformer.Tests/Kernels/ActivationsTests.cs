namespace GpuTransformer.Tests.Kernels;

[Collection(DeviceCollection.Name)]
public sealed class ActivationsTests(Devices devices)
{
    public static TheoryData<Activation> AllActivations => [Activation.None, Activation.Relu, Activation.Gelu, Activation.GeluExact];

    // Float kernels vs the double definitions over x ∈ [−6, 6]. ReLU/None are exact. GELU: MathF.Tanh/Exp
    // and the A&S erf (|err| ≤ 1.5e-7) give ≤ 5e-7 absolute (measured); a wrong constant or term is ≥ 1e-4.
    private static (double Atol, double Rtol) Tolerance(Activation activation) =>
        activation is Activation.Gelu or Activation.GeluExact ? (1e-6, 4e-6) : (0, 0);

    /// <summary>Values over [−6, 6] plus the edges: 0, ±tiny, ±large.</summary>
    private static float[] Inputs(int seed, int count)
    {
        var x = TestTensors.Random(seed, count, 6f);
        float[] edges = [0f, -0f, 1e-30f, -1e-30f, 12f, -12f, 1f, -1f];
        for (var i = 0; i < Math.Min(count, edges.Length); i++)
            x[i * (count / Math.Min(count, edges.Length))] = edges[i];
        return x;
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Forward_and_backward_match_double_reference(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<ActivationKernels>();
        foreach (var activation in new[] { Activation.None, Activation.Relu, Activation.Gelu, Activation.GeluExact })
        {
            foreach (var n in new[] { 1, 63, 1000 })
            {
                var x = Inputs(n, n);
                var dy = TestTensors.Random(n + 1, n);
                using var dx = device.Upload(x);
                using var ddy = device.Upload(dy);
                using var output = device.Zeros<float>(n);
                var (atol, rtol) = Tolerance(activation);

                kernels.Forward(output.View, dx.View, n, activation);
                TestTensors.AssertClose(ActivationsReference.Forward(x, activation), device.Download(output, n), atol, rtol, $"{activation} forward n={n}");

                kernels.Backward(output.View, ddy.View, dx.View, n, activation);
                TestTensors.AssertClose(ActivationsReference.Backward(dy, x, activation), device.Download(output, n), atol, rtol, $"{activation} backward n={n}");
            }
        }
    }

    /// <summary>GELU (tanh, erf) over [−10, 10] and ReLU (zeros included) against PyTorch (float64) from tests/golden; same tolerances as against the reference.</summary>
    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Match_PyTorch_golden_files(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<ActivationKernels>();
        foreach (var (name, y, dx, activation) in new[]
        {
            ("gelu", "y_tanh", "dx_tanh", Activation.Gelu),
            ("gelu", "y_exact", "dx_exact", Activation.GeluExact),
            ("relu", "y", "dx", Activation.Relu),
        })
        {
            var file = GoldenFilesTests.Load(name);
            var x = file.Floats("x");
            using var input = device.Upload(x);
            using var dOutput = device.Upload(file.Floats("dy"));
            using var output = device.Zeros<float>(x.Length);
            var (atol, rtol) = Tolerance(activation);
            kernels.Forward(output.View, input.View, x.Length, activation);
            TestTensors.AssertClose(file.Floats(y), device.Download(output, x.Length), atol, rtol, $"{name}/{y}");
            kernels.Backward(output.View, dOutput.View, input.View, x.Length, activation);
            TestTensors.AssertClose(file.Floats(dx), device.Download(output, x.Length), atol, rtol, $"{name}/{dx}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Run_in_place(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<ActivationKernels>();
        const int n = 33;
        var x = Inputs(7, n);
        var dy = TestTensors.Random(8, n);
        using var buffer = device.Upload(x);
        kernels.Forward(buffer.View, buffer.View, n, Activation.GeluExact);
        TestTensors.AssertClose(ActivationsReference.Forward(x, Activation.GeluExact), device.Download(buffer, n), 1e-6, 4e-6, "forward in place");

        using var input = device.Upload(x);
        using var gradient = device.Upload(dy);
        kernels.Backward(gradient.View, gradient.View, input.View, n, Activation.Gelu);
        TestTensors.AssertClose(ActivationsReference.Backward(dy, x, Activation.Gelu), device.Download(gradient, n), 1e-6, 4e-6, "backward dInput = dOutput");
    }

    [Theory]
    [MemberData(nameof(AllActivations))]
    public void Reference_backward_matches_finite_differences(Activation activation)
    {
        // L(x) = Σ w·f(x) in double, central differences with h = 1e-5: truncation ~h²·f''' ≲ 1e-10,
        // rounding ~1e-16/h ≈ 1e-11. Points avoid ReLU's kink at 0.
        double[] x = [-5.5, -3.1, -1.7, -0.9, -0.31, 0.02, 0.45, 1.3, 2.2, 4.7];
        var w = FiniteDifferences.Random(3, x.Length);
        var numeric = FiniteDifferences.Gradient(v => FiniteDifferences.Dot(w, ActivationsReference.Forward(v, activation)), x);
        FiniteDifferences.AssertClose(numeric, ActivationsReference.Backward(w, x, activation), 1e-8, 1e-8, $"{activation} dx");
    }

    [Fact]
    public void Reference_erf_matches_known_values()
    {
        // math.erf / math.erfc of CPython (correctly rounded libm values).
        (double X, double Erf, double Erfc)[] known =
        [
            (0.3, 0.3286267594591274, 0.6713732405408726),
            (1.7, 0.9837904585907745, 0.016209541409225436),
            (2.0, 0.9953222650189527, 0.004677734981047265),
            (2.5, 0.999593047982555, 0.0004069520174449589),
            (2.9, 0.9999589021219005, 4.109787809945886e-05),
            (3.0, 0.9999779095030014, 2.2090496998585438e-05),
            (3.3, 0.9999969422902035, 3.0577097964381654e-06),
            (4.5, 0.9999999998033839, 1.9661604415428873e-10),
        ];
        foreach (var (x, erf, erfc) in known)
        {
            Assert.Equal(erf, ActivationsReference.Erf(x), 1e-15);
            Assert.Equal(-erf, ActivationsReference.Erf(-x), 1e-15);
            Assert.True(Math.Abs(ActivationsReference.Erfc(x) / erfc - 1) < 1e-13, $"erfc({x}) = {ActivationsReference.Erfc(x):g17}, expected {erfc:g17}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Bad_arguments_throw_before_launch(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<ActivationKernels>();
        using var small = device.Zeros<float>(4);
        using var big = device.Zeros<float>(8);
        var error = Assert.Throws<ArgumentException>(() => kernels.Forward(small.View, big.View, 8, Activation.Relu));
        Assert.Contains("output has 4 elements", error.Message);
        error = Assert.Throws<ArgumentException>(() => kernels.Backward(big.View, big.View, small.View, 8, Activation.Gelu));
        Assert.Contains("input has 4 elements", error.Message);
        Assert.Throws<ArgumentException>(() => kernels.Forward(big.View, big.View, 0, Activation.Relu));
        Assert.Throws<ArgumentException>(() => kernels.Forward(big.View, big.View, -1, Activation.Relu));
        Assert.Throws<ArgumentException>(() => kernels.Forward(big.View, big.View, 8, (Activation)42));
        error = Assert.Throws<ArgumentException>(() => kernels.Forward(big.View.SubView(1, 7), big.View.SubView(0, 7), 7, Activation.Relu));
        Assert.Contains("overlap", error.Message);
    }
}
