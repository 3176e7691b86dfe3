namespace GpuTransformer.Tests.Kernels;

[Collection(DeviceCollection.Name)]
public sealed class LayerNormTests(Devices devices)
{
    // y, mean, rstd: O(1) values from float sums over ≤ 300 elements.
    private const double Atol = 1e-5, Rtol = 1e-5;

    // dx has cancellation (g − mean(g) − x̂·mean(g·x̂)); dγ/dβ add up to 33 rows.
    private const double GradientAtol = 2e-5, GradientRtol = 1e-4;

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Forward_and_backward_match_reference_on_ragged_shapes(string backend)
    {
        var device = devices.Get(backend);
        foreach (var columns in new[] { 1, 7, 63, 64, 300 })
        {
            foreach (var rows in new[] { 1, 7, 33 })
            {
                var run = CheckRandom(device, rows, columns, $"{backend} [{rows}, {columns}]");
                if (rows == 33 && columns == 63)
                {
                    // The parameter gradients are summed in a fixed order: bitwise reproducible.
                    var again = CheckRandom(device, rows, columns, $"{backend} [{rows}, {columns}] again");
                    Assert.Equal(run.DGamma, again.DGamma);
                    Assert.Equal(run.DBeta, again.DBeta);
                }
            }
        }
    }

    /// <summary>
    /// The GPU row kernels (<see cref="RowTile.Vector256"/>: rows of up to 4096 in registers,
    /// the backward writing dx and the dγ/dβ partials of 32 rows in one pass) against the
    /// reference: aligned and unaligned widths, the register limit and past it, two chunks and a
    /// ragged one, bitwise-reproducible parameter gradients, in place.
    /// </summary>
    [Fact]
    public void Vector256_rows_match_reference_aligned_unaligned_past_4096_and_in_place()
    {
        var device = devices.WithGroupsOf(256, t => t with { RowTile = RowTile.Vector256 });
        Assert.SkipWhen(device is null, $"no backend here runs 256-thread groups (PoCL: {Devices.WhyMissing("opencl")})");
        const int rows = 70;
        foreach (var columns in new[] { 1, 7, 64, 301, 4096, 4100 })
        {
            var run = CheckRandom(device, rows, columns, $"vector256 [{rows}, {columns}]");
            var again = CheckRandom(device, rows, columns, $"vector256 [{rows}, {columns}] again");
            Assert.Equal(run.DGamma, again.DGamma);
            Assert.Equal(run.DBeta, again.DBeta);
        }

        // In place: y over x, then dx over dy.
        const int inPlaceColumns = 96;
        var values = Shifted(TestTensors.Random(3, rows * inPlaceColumns), 2f);
        var g = Shifted(TestTensors.Random(4, inPlaceColumns, scale: 0.5f), 1f);
        var b = TestTensors.Random(5, inPlaceColumns);
        var upstream = TestTensors.Random(6, rows * inPlaceColumns);
        var layerNorm = device.Kernels<LayerNormKernels>();
        using var buffer = device.Upload(values);
        using var dGamma = device.Upload(g);
        using var dBeta = device.Upload(b);
        using var mean = device.Zeros<float>(rows);
        using var rstd = device.Zeros<float>(rows);
        layerNorm.Forward(buffer.View, mean.View, rstd.View, buffer.View, dGamma.View, dBeta.View, rows, inPlaceColumns);
        var (y, _, _) = LayerNormReference.Forward(values, g, b, rows, inPlaceColumns);
        TestTensors.AssertClose(y, device.Download(buffer, rows * inPlaceColumns), Atol, Rtol, "vector256 in place y");
        using var x2 = device.Upload(values);
        using var gradient = device.Upload(upstream);
        using var gammaGradient = device.Zeros<float>(inPlaceColumns);
        using var betaGradient = device.Zeros<float>(inPlaceColumns);
        using var scratch = device.Zeros<float>(LayerNormKernels.BackwardScratchLength(rows, inPlaceColumns));
        layerNorm.Backward(gradient.View, gammaGradient.View, betaGradient.View, scratch.View, gradient.View, x2.View, dGamma.View, mean.View, rstd.View, rows, inPlaceColumns);
        var (dx, _, _) = LayerNormReference.Backward(upstream, values, g, device.Download(mean, rows), device.Download(rstd, rows), rows, inPlaceColumns);
        TestTensors.AssertClose(dx, device.Download(gradient, rows * inPlaceColumns), GradientAtol, GradientRtol, "vector256 in place dx");
    }

    /// <summary>
    /// PoCL's row kernels (<see cref="RowTile.CpuLanes"/>: the sums 8 lanes at a time), forced on
    /// every backend so that the simulator checks them where PoCL is missing: widths below, at and
    /// past multiples of 8 and a long row, a large mean, bitwise-reproducible dγ/dβ.
    /// </summary>
    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void CpuLanes_rows_match_reference_ragged_and_long(string backend)
    {
        var device = devices.Get(backend, devices.Get(backend).Tuning with { RowTile = RowTile.CpuLanes });
        foreach (var columns in new[] { 1, 7, 8, 9, 63, 64, 300, 2051 })
        {
            var run = CheckRandom(device, 5, columns, $"{backend} lanes [5, {columns}]");
            var again = CheckRandom(device, 5, columns, $"{backend} lanes [5, {columns}] again");
            Assert.Equal(run.DGamma, again.DGamma);
            Assert.Equal(run.DBeta, again.DBeta);
        }
        CheckLargeMean(device, $"{backend} lanes");
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Rows_with_a_large_mean_keep_their_precision(string backend) => CheckLargeMean(devices.Get(backend), backend);

    private static void CheckLargeMean(ComputeDevice device, string backend)
    {
        // Around 1000 ± 1, E[x²] − E[x]² in float loses the variance (≈ 1/3) to rounding of
        // ≈ 1e6 (ulp 0.06); row 0 starts with an outlier, so the shift by the first element
        // does not help there and Welford/Chan must carry it.
        const int rows = 5;
        foreach (var columns in new[] { 63, 129 })
        {
            var x = Shifted(TestTensors.Random(columns, rows * columns), 1000f);
            x[0] = 1100f;
            var gamma = Shifted(TestTensors.Random(2, columns, scale: 0.5f), 1f);
            var beta = TestTensors.Random(3, columns);
            var dy = TestTensors.Random(4, rows * columns);
            var run = Run(device, x, gamma, beta, dy, rows, columns);
            var what = $"{backend} mean 1000 [{rows}, {columns}]";
            var (y, mean, rstd) = LayerNormReference.Forward(x, gamma, beta, rows, columns);
            TestTensors.AssertClose(y, run.Y, Atol, Rtol, $"{what} y");
            TestTensors.AssertClose(mean, run.Mean, 0, 1e-7, $"{what} mean");
            TestTensors.AssertClose(rstd, run.Rstd, 0, Rtol, $"{what} rstd");
            // The saved float mean is off by up to ulp(1000)/2 ≈ 3e-5, which shifts x̂ by that
            // times rstd (as in PyTorch, which saves float statistics too): the backward is
            // checked from the statistics the kernel saved.
            var (dx, dGamma, dBeta) = LayerNormReference.Backward(dy, x, gamma, run.Mean, run.Rstd, rows, columns);
            TestTensors.AssertClose(dx, run.Dx, GradientAtol, GradientRtol, $"{what} dx");
            TestTensors.AssertClose(dGamma, run.DGamma, GradientAtol, GradientRtol, $"{what} dγ");
            TestTensors.AssertClose(dBeta, run.DBeta, GradientAtol, GradientRtol, $"{what} dβ");
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void In_place_and_accumulating_parameter_gradients_and_another_group_size(string backend)
    {
        const int rows = 40, columns = 21;
        var x = TestTensors.Random(1, rows * columns, scale: 3f);
        var gamma = Shifted(TestTensors.Random(2, columns, scale: 0.5f), 1f);
        var beta = TestTensors.Random(3, columns);
        var dy = TestTensors.Random(4, rows * columns);
        var previousGamma = TestTensors.Random(5, columns);
        var previousBeta = TestTensors.Random(6, columns);
        var (expectedY, _, _) = LayerNormReference.Forward(x, gamma, beta, rows, columns);
        var (expectedDx, expectedDGamma, expectedDBeta) = LayerNormReference.Backward(dy, x, gamma, rows, columns);

        var device = devices.Get(backend);
        // Strided: one thread per row where the default has groups, and 16 threads where it has one;
        // and PoCL's lanes.
        var strided = devices.Get(backend, device.Tuning with { RowTile = RowTile.Strided, RowGroupSize = device.Tuning.RowGroupSize == 1 ? 16 : 1 });
        var lanes = devices.Get(backend, device.Tuning with { RowTile = RowTile.CpuLanes });
        foreach (var d in new[] { device, strided, lanes })
        {
            var what = $"{backend} {d.Tuning.RowTile} group {d.Tuning.RowGroupSize}";
            var layerNorm = d.Kernels<LayerNormKernels>();
            using var activations = d.Upload(x);
            using var copy = d.Upload(x);
            using var weight = d.Upload(gamma);
            using var bias = d.Upload(beta);
            using var mean = d.Zeros<float>(rows);
            using var rstd = d.Zeros<float>(rows);
            using var gradient = d.Upload(dy);
            using var parameterGradients = d.Upload([.. previousGamma, .. previousBeta]);
            using var scratch = d.Zeros<float>(LayerNormKernels.BackwardScratchLength(rows, columns));

            layerNorm.Forward(activations.View, mean.View, rstd.View, activations.View, weight.View, bias.View, rows, columns);
            TestTensors.AssertClose(expectedY, d.Download(activations, rows * columns), Atol, Rtol, $"{what} forward in place");

            // dx over dy; dγ/dβ added to what the previous micro-batch left.
            layerNorm.Backward(
                gradient.View, parameterGradients.View.SubView(0, columns), parameterGradients.View.SubView(columns, columns), scratch.View,
                gradient.View, copy.View, weight.View, mean.View, rstd.View, rows, columns, accumulateParameterGradients: true);
            var sums = d.Download(parameterGradients, 2 * columns);
            TestTensors.AssertClose(expectedDx, d.Download(gradient, rows * columns), GradientAtol, GradientRtol, $"{what} dx in place");
            TestTensors.AssertClose(Add(previousGamma, expectedDGamma), sums.AsSpan(0, columns), GradientAtol, GradientRtol, $"{what} dγ accumulated");
            TestTensors.AssertClose(Add(previousBeta, expectedDBeta), sums.AsSpan(columns), GradientAtol, GradientRtol, $"{what} dβ accumulated");
        }
    }

    [Fact]
    public void Reference_backward_matches_finite_differences()
    {
        const int rows = 3, columns = 5;
        var x = FiniteDifferences.Random(1, rows * columns, 2);
        var gamma = FiniteDifferences.Random(2, columns);
        var beta = FiniteDifferences.Random(3, columns);
        var w = FiniteDifferences.Random(4, rows * columns);
        double Loss(double[] xs, double[] g, double[] b) => FiniteDifferences.Dot(w, LayerNormReference.Forward(xs, g, b, rows, columns).Output);

        var (dx, dGamma, dBeta) = LayerNormReference.Backward(w, x, gamma, rows, columns);
        FiniteDifferences.AssertClose(FiniteDifferences.Gradient(v => Loss(v, gamma, beta), x), dx, 1e-8, 1e-6, "dx");
        FiniteDifferences.AssertClose(FiniteDifferences.Gradient(v => Loss(x, v, beta), gamma), dGamma, 1e-8, 1e-6, "dγ");
        FiniteDifferences.AssertClose(FiniteDifferences.Gradient(v => Loss(x, gamma, v), beta), dBeta, 1e-8, 1e-6, "dβ");
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Bad_arguments_throw_before_launch(string backend)
    {
        var device = devices.Get(backend);
        var layerNorm = device.Kernels<LayerNormKernels>();
        const int rows = 4, columns = 6;
        using var a = device.Zeros<float>(rows * columns);
        using var b = device.Zeros<float>(rows * columns);
        using var c = device.Zeros<float>(rows * columns);
        using var stats = device.Zeros<float>(2 * rows);
        using var parameters = device.Zeros<float>(4 * columns);
        using var scratch = device.Zeros<float>(LayerNormKernels.BackwardScratchLength(rows, columns));
        var mean = stats.View.SubView(0, rows);
        var rstd = stats.View.SubView(rows, rows);
        var gamma = parameters.View.SubView(0, columns);
        var beta = parameters.View.SubView(columns, columns);
        var dGamma = parameters.View.SubView(2 * columns, columns);
        var dBeta = parameters.View.SubView(3 * columns, columns);

        void Forward(float eps = 1e-5f, int r = rows, int cols = columns, ArrayView<float>? output = null, ArrayView<float>? m = null) =>
            layerNorm.Forward(output ?? a.View.AsContiguous(), m ?? mean, rstd, b.View, gamma, beta, r, cols, eps);
        void Backward(ArrayView<float>? s = null, ArrayView<float>? dg = null, ArrayView<float>? dx = null) =>
            layerNorm.Backward(dx ?? a.View.AsContiguous(), dg ?? dGamma, dBeta, s ?? scratch.View.AsContiguous(), c.View, b.View, gamma, mean, rstd, rows, columns);

        Forward(); // the valid call
        Backward();
        Assert.Contains("eps", Assert.Throws<ArgumentException>(() => Forward(eps: 0)).Message);
        Assert.Throws<ArgumentException>(() => Forward(eps: float.NaN));
        Assert.Throws<ArgumentException>(() => Forward(r: 0));
        Assert.Throws<ArgumentException>(() => Forward(cols: -2));
        Assert.Contains("[5, 6] needs 30", Assert.Throws<ArgumentException>(() => Forward(r: 5)).Message);
        Assert.Contains("partially overlap", Assert.Throws<ArgumentException>(() => Forward(output: b.View.SubView(1, 20), r: 3)).Message);
        Assert.Throws<ArgumentException>(() => Forward(m: gamma.SubView(0, rows)));
        Assert.Contains("scratch", Assert.Throws<ArgumentException>(() => Backward(s: scratch.View.SubView(0, 2))).Message);
        Assert.Throws<ArgumentException>(() => Backward(dg: dBeta));
        Assert.Throws<ArgumentException>(() => Backward(dx: c.View.SubView(3, 20)));
        Assert.Throws<ArgumentException>(() => Backward(dx: b.View.SubView(0, 24), dg: b.View.SubView(0, columns)));
        Assert.Throws<ArgumentException>(() => LayerNormKernels.BackwardScratchLength(0, columns));
    }

    internal sealed record Results(float[] Y, float[] Mean, float[] Rstd, float[] Dx, float[] DGamma, float[] DBeta);

    /// <summary>
    /// Forward and backward of random inputs [<paramref name="rows"/>, <paramref name="columns"/>] against the
    /// reference, with the tolerances set for rows of ≤ 300 times <paramref name="toleranceScale"/>.
    /// </summary>
    internal static Results CheckRandom(ComputeDevice device, int rows, int columns, string what, double toleranceScale = 1)
    {
        var x = Shifted(TestTensors.Random(rows + columns, rows * columns, scale: 2f), 0.5f);
        var gamma = Shifted(TestTensors.Random(columns, columns, scale: 0.5f), 1f);
        var beta = TestTensors.Random(columns + 1, columns, scale: 0.3f);
        var dy = TestTensors.Random(rows * columns, rows * columns);
        var run = Run(device, x, gamma, beta, dy, rows, columns);
        Check(run, x, gamma, beta, dy, rows, columns, what, toleranceScale);
        return run;
    }

    private static Results Run(ComputeDevice device, float[] x, float[] gamma, float[] beta, float[] dy, int rows, int columns)
    {
        var layerNorm = device.Kernels<LayerNormKernels>();
        using var input = device.Upload(x);
        using var weight = device.Upload(gamma);
        using var bias = device.Upload(beta);
        using var output = device.Zeros<float>(rows * columns);
        using var mean = device.Zeros<float>(rows);
        using var rstd = device.Zeros<float>(rows);
        using var dOutput = device.Upload(dy);
        using var dInput = device.Zeros<float>(rows * columns);
        using var dGamma = device.Upload(TestTensors.Random(9, columns)); // overwritten: not accumulating
        using var dBeta = device.Upload(TestTensors.Random(10, columns));
        using var scratch = device.Zeros<float>(LayerNormKernels.BackwardScratchLength(rows, columns));
        layerNorm.Forward(output.View, mean.View, rstd.View, input.View, weight.View, bias.View, rows, columns);
        layerNorm.Backward(dInput.View, dGamma.View, dBeta.View, scratch.View, dOutput.View, input.View, weight.View, mean.View, rstd.View, rows, columns);
        return new Results(
            device.Download(output, rows * columns), device.Download(mean, rows), device.Download(rstd, rows),
            device.Download(dInput, rows * columns), device.Download(dGamma, columns), device.Download(dBeta, columns));
    }

    private static void Check(Results run, float[] x, float[] gamma, float[] beta, float[] dy, int rows, int columns, string what, double toleranceScale = 1)
    {
        var (y, mean, rstd) = LayerNormReference.Forward(x, gamma, beta, rows, columns);
        var (dx, dGamma, dBeta) = LayerNormReference.Backward(dy, x, gamma, rows, columns);
        var (atol, rtol, gradientAtol, gradientRtol) = (Atol * toleranceScale, Rtol * toleranceScale, GradientAtol * toleranceScale, GradientRtol * toleranceScale);
        TestTensors.AssertClose(y, run.Y, atol, rtol, $"{what} y");
        TestTensors.AssertClose(mean, run.Mean, atol, 1e-7 * toleranceScale, $"{what} mean");
        TestTensors.AssertClose(rstd, run.Rstd, 0, rtol, $"{what} rstd");
        TestTensors.AssertClose(dx, run.Dx, gradientAtol, gradientRtol, $"{what} dx");
        TestTensors.AssertClose(dGamma, run.DGamma, gradientAtol, gradientRtol, $"{what} dγ");
        TestTensors.AssertClose(dBeta, run.DBeta, gradientAtol, gradientRtol, $"{what} dβ");
    }

    private static float[] Shifted(float[] values, float shift)
    {
        for (var i = 0; i < values.Length; i++)
            values[i] += shift;
        return values;
    }

    private static float[] Add(float[] a, float[] b) => [.. a.Select((v, i) => v + b[i])];
}
