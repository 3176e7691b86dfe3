namespace GpuTransformer.Tests.Kernels;

[Collection(DeviceCollection.Name)]
public sealed class PositionalEncodingTests(Devices devices)
{
    // Against the double definition: the phase is reduced exactly (64-bit fixed-point turns) and folded to
    // [−π/2, π/2], so the error is the float rounding of that angle (≤ 1e-7 rad) plus the float polynomial:
    // ≤ 1e-6 at any position (measured ≤ 1.2e-7 up to 10⁶, 3.5e-7 near 2³¹). PyTorch's float angle is
    // off by 3e-5 below position 512 and 8e-4 near 10⁴.
    private const double Atol = 1e-6;

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Table_matches_double_reference_up_to_large_positions(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<PositionalEncodingKernels>();
        foreach (var (positions, dModel, offset) in new[] { (1, 1, 0), (33, 7, 0), (17, 64, 10_000), (5, 63, 2_000_000_000) })
        {
            using var table = device.Zeros<float>(positions * dModel);
            kernels.WriteTable(table.View, positions, dModel, offset);
            TestTensors.AssertClose(PositionalEncodingReference.Table(positions, dModel, offset), device.Download(table, positions * dModel), Atol, 0, $"PE [{positions}, {dModel}] from {offset}");
        }
    }

    /// <summary>The [3001, d] tables of tests/golden (PyTorch in float64, d = 10 and odd d = 7), same tolerance as against the reference.</summary>
    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Table_matches_PyTorch_golden_files(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<PositionalEncodingKernels>();
        foreach (var name in new[] { "positional_encoding_even", "positional_encoding_odd" })
        {
            var expected = GoldenFilesTests.Load(name).Get("pe");
            var (positions, dModel) = (expected.Shape[0], expected.Shape[1]);
            using var table = device.Zeros<float>(positions * dModel);
            kernels.WriteTable(table.View, positions, dModel);
            TestTensors.AssertClose(expected.ToFloats(), device.Download(table, positions * dModel), Atol, 0, name);
        }
    }

    [Fact]
    public void Odd_model_width_ends_with_a_sine_column()
    {
        // d = 5: columns sin ω0, cos ω0, sin ω1, cos ω1, sin ω2 with ω_i = 10000^(−2i/5).
        const double position = 3;
        for (var column = 0; column < 5; column++)
        {
            var omega = Math.Pow(10000, -2.0 * (column / 2) / 5);
            var expected = column % 2 == 0 ? Math.Sin(position * omega) : Math.Cos(position * omega);
            Assert.Equal(expected, PositionalEncodingReference.Value(3, column, 5), 1e-14);
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Forward_adds_scaled_input_and_encoding_in_place_or_not(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<PositionalEncodingKernels>();
        const int batch = 3, sequence = 7, dModel = 9, offset = 41;
        const int count = batch * sequence * dModel;
        var scale = MathF.Sqrt(dModel);
        var x = TestTensors.Random(3, count);
        var expected = PositionalEncodingReference.Forward(x, batch, sequence, dModel, scale, offset);
        using var input = device.Upload(x);
        using var output = device.Zeros<float>(count);

        kernels.Forward(output.View, input.View, batch, sequence, dModel, scale, offset);
        // |x·scale| ≤ 3: one float rounding of the product and the sum, ≤ 4e-7 on top of the PE error.
        TestTensors.AssertClose(expected, device.Download(output, count), Atol, 1e-6, "out of place");

        kernels.Forward(input.View, input.View, batch, sequence, dModel, scale, offset);
        TestTensors.AssertClose(expected, device.Download(input, count), Atol, 1e-6, "in place");
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Backward_scales_the_gradient(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<PositionalEncodingKernels>();
        const int batch = 2, sequence = 5, dModel = 3;
        const int count = batch * sequence * dModel;
        var dy = TestTensors.Random(5, count);
        using var dOutput = device.Upload(dy);
        using var dInput = device.Zeros<float>(count);
        kernels.Backward(dInput.View, dOutput.View, batch, sequence, dModel, 2.5f);
        TestTensors.AssertClose(PositionalEncodingReference.Backward(dy, 2.5f), device.Download(dInput, count), 0, 1e-7, "dInput");
    }

    [Fact]
    public void Reference_backward_matches_finite_differences()
    {
        // L(x) = Σ w · PE-add(x) in double; central differences (h = 1e-5) of an affine function are exact
        // up to rounding (~1e-11).
        const int batch = 2, sequence = 3, dModel = 5, count = batch * sequence * dModel;
        const double scale = 1.75;
        var x = FiniteDifferences.Random(11, count);
        var w = FiniteDifferences.Random(12, count);
        var numeric = FiniteDifferences.Gradient(
            v => FiniteDifferences.Dot(w, PositionalEncodingReference.Forward(v, batch, sequence, dModel, scale, positionOffset: 7)), x);
        FiniteDifferences.AssertClose(numeric, PositionalEncodingReference.Backward(w, scale), 1e-8, 1e-8, "dx");
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Bad_arguments_throw_before_launch(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<PositionalEncodingKernels>();
        using var buffer = device.Zeros<float>(64);
        var error = Assert.Throws<ArgumentException>(() => kernels.WriteTable(buffer.View, 9, 8));
        Assert.Contains("needs 72", error.Message);
        Assert.Throws<ArgumentException>(() => kernels.WriteTable(buffer.View, 2, 8, positionOffset: -1));
        error = Assert.Throws<ArgumentException>(() => kernels.WriteTable(buffer.View, 2, 8, positionOffset: int.MaxValue));
        Assert.Contains("exceed", error.Message);
        Assert.Throws<ArgumentException>(() => kernels.Forward(buffer.View, buffer.View, 0, 2, 8));
        Assert.Throws<ArgumentException>(() => kernels.Forward(buffer.View, buffer.View, 2, -2, 8));
        Assert.Throws<ArgumentException>(() => kernels.Forward(buffer.View.SubView(0, 32), buffer.View, 2, 4, 8));
        error = Assert.Throws<ArgumentException>(() => kernels.Forward(buffer.View.SubView(8, 32), buffer.View.SubView(0, 32), 1, 4, 8));
        Assert.Contains("overlap", error.Message);
        Assert.Throws<ArgumentException>(() => kernels.Backward(buffer.View, buffer.View, 3, 4, 8));
    }
}
