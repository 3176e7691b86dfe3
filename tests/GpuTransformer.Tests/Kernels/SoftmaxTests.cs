namespace GpuTransformer.Tests.Kernels;

[Collection(DeviceCollection.Name)]
public sealed class SoftmaxTests(Devices devices)
{
    // Softmax outputs lie in [0, 1]: float exp and a float row sum are good to a few ulp.
    private const double Atol = 1e-6, Rtol = 1e-5;

    // The backward subtracts Σ dy·y from dy: absolute error of a few ulp of |dy| ~ 1.
    private const double BackwardAtol = 2e-6, BackwardRtol = 1e-4;

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Forward_and_backward_match_reference_on_ragged_shapes(string backend)
    {
        var device = devices.Get(backend);
        var options = new SoftmaxOptions { Scale = 0.6f };
        foreach (var columns in new[] { 1, 7, 63, 64, 300 })
        {
            foreach (var rows in new[] { 1, 7, 33 })
                CheckRandom(device, rows, columns, options, $"{backend} [{rows}, {columns}]");
        }
    }

    /// <summary>Forward and backward of random inputs [<paramref name="rows"/>, <paramref name="columns"/>] against the reference.</summary>
    internal static void CheckRandom(ComputeDevice device, int rows, int columns, SoftmaxOptions options, string what)
    {
        var softmax = device.Kernels<SoftmaxKernels>();
        var input = TestTensors.Random(rows * 1000 + columns, rows * columns, scale: 5f);
        var dy = TestTensors.Random(rows * 1000 + columns + 1, rows * columns);
        using var dInputBuffer = device.Upload(input);
        using var output = device.Zeros<float>(rows * columns);
        using var dOutput = device.Upload(dy);
        using var dInput = device.Zeros<float>(rows * columns);

        softmax.Forward(output.View, dInputBuffer.View, rows, columns, options);
        var y = device.Download(output, rows * columns);
        TestTensors.AssertClose(SoftmaxReference.Forward(input, rows, columns, options), y, Atol, Rtol, $"{what} forward");

        softmax.Backward(dInput.View, output.View, dOutput.View, rows, columns, options);
        TestTensors.AssertClose(
            SoftmaxReference.Backward(y, dy, rows, columns, options), device.Download(dInput, rows * columns),
            BackwardAtol, BackwardRtol, $"{what} backward");
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Causal_mask_with_offsets_in_place_zeroes_masked_and_fully_masked_rows(string backend)
    {
        var device = devices.Get(backend);
        var softmax = device.Kernels<SoftmaxKernels>();
        const int batches = 3, queries = 7;
        const int rows = batches * queries;
        // Tk = Tq; keys beyond the queries (a cache); an offset that masks the first rows
        // completely; and one that masks nothing.
        foreach (var (columns, offset) in new[] { (7, 0), (33, 26), (40, -3), (9, int.MaxValue) })
        {
            var what = $"{backend} Tq={queries} Tk={columns} offset={offset}";
            var options = SoftmaxOptions.CausalMask(queries, offset, scale: 0.25f);
            var input = TestTensors.Random(columns + offset % 100, rows * columns, scale: 8f);
            var dy = TestTensors.Random(columns + 7, rows * columns);
            using var buffer = device.Upload(input);
            using var gradient = device.Upload(dy);

            softmax.Forward(buffer.View, buffer.View, rows, columns, options);
            var y = device.Download(buffer, rows * columns);
            var expected = SoftmaxReference.Forward(input, rows, columns, options);
            TestTensors.AssertClose(expected, y, Atol, Rtol, $"{what} forward");

            softmax.Backward(gradient.View, buffer.View, gradient.View, rows, columns, options);
            var dx = device.Download(gradient, rows * columns);
            TestTensors.AssertClose(SoftmaxReference.Backward(y, dy, rows, columns, options), dx, BackwardAtol, BackwardRtol, $"{what} backward");

            for (var r = 0; r < rows; r++)
            {
                for (var j = 0; j < columns; j++)
                {
                    if (!SoftmaxReference.Visible(options, r, j))
                    {
                        Assert.Equal(0f, y[r * columns + j]);
                        Assert.Equal(0f, dx[r * columns + j]);
                    }
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Rows_of_minus_infinity_give_zeros_and_another_group_size_gives_the_same_result(string backend)
    {
        var device = devices.Get(backend);
        // Strided: one thread per row where the default has groups, and 16 threads where it has one.
        var strided = devices.Get(backend, device.Tuning with { RowTile = RowTile.Strided, RowGroupSize = device.Tuning.RowGroupSize == 1 ? 16 : 1 });
        var lanes = devices.Get(backend, device.Tuning with { RowTile = RowTile.CpuLanes });
        const int rows = 4, columns = 37;
        var input = TestTensors.Random(5, rows * columns, scale: 3f);
        for (var j = 0; j < columns; j++)
            input[columns + j] = float.NegativeInfinity; // row 1: nothing left
        input[3 * columns + 5] = float.NegativeInfinity; // row 3: one entry masked by the caller
        var expected = SoftmaxReference.Forward(input, rows, columns);
        Assert.All(expected.AsSpan(columns, columns).ToArray(), v => Assert.Equal(0f, v));

        foreach (var d in new[] { device, strided, lanes })
        {
            using var buffer = d.Upload(input);
            using var output = d.Zeros<float>(rows * columns);
            d.Kernels<SoftmaxKernels>().Forward(output.View, buffer.View, rows, columns);
            TestTensors.AssertClose(expected, d.Download(output, rows * columns), Atol, Rtol, $"{backend} {d.Tuning.RowTile} group {d.Tuning.RowGroupSize}");
        }
    }

    /// <summary>
    /// The GPU row kernels (<see cref="RowTile.Vector256"/>: rows of up to 4096 in registers,
    /// 128-bit accesses when rows are aligned, longer rows strided) against the reference:
    /// aligned and unaligned widths, the register limit and past it, a causal mask in place
    /// with fully masked rows.
    /// </summary>
    [Fact]
    public void Vector256_rows_match_reference_aligned_unaligned_past_4096_and_causal_in_place()
    {
        var device = devices.WithGroupsOf(256, t => t with { RowTile = RowTile.Vector256 });
        Assert.SkipWhen(device is null, $"no backend here runs 256-thread groups (PoCL: {Devices.WhyMissing("opencl")})");
        foreach (var columns in new[] { 1, 7, 64, 301, 1000, 4096, 4100 })
            CheckRandom(device, 3, columns, new SoftmaxOptions { Scale = 0.6f }, $"vector256 [3, {columns}]");

        CheckCausalInPlace(device, "vector256");
    }

    /// <summary>
    /// PoCL's row kernels (<see cref="RowTile.CpuLanes"/>: 8 lanes at a time, a polynomial e^x),
    /// forced on every backend so that the simulator checks them where PoCL is missing: widths
    /// below, at and past multiples of 8, a negative scale, a long row, and a causal mask in place
    /// with fully masked rows.
    /// </summary>
    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void CpuLanes_rows_match_reference_ragged_negative_scale_and_causal_in_place(string backend)
    {
        var device = devices.Get(backend, devices.Get(backend).Tuning with { RowTile = RowTile.CpuLanes });
        foreach (var columns in new[] { 1, 7, 8, 9, 63, 64, 300, 2051 })
            CheckRandom(device, 3, columns, new SoftmaxOptions { Scale = 0.6f }, $"{backend} lanes [3, {columns}]");
        CheckRandom(device, 5, 37, new SoftmaxOptions { Scale = -1.3f }, $"{backend} lanes negative scale");
        CheckCausalInPlace(device, $"{backend} lanes");
    }

    /// <summary>A causal softmax in place over 40 keys with offset −3 (the first rows fully masked), forward and backward, against the reference.</summary>
    private static void CheckCausalInPlace(ComputeDevice device, string what)
    {
        var softmax = device.Kernels<SoftmaxKernels>();
        const int queries = 7, causalRows = 3 * queries, keys = 40;
        var causal = SoftmaxOptions.CausalMask(queries, -3, scale: 0.25f);
        var scores = TestTensors.Random(9, causalRows * keys, scale: 8f);
        var gradient = TestTensors.Random(10, causalRows * keys);
        using var buffer = device.Upload(scores);
        using var gradients = device.Upload(gradient);
        softmax.Forward(buffer.View, buffer.View, causalRows, keys, causal);
        var probabilities = device.Download(buffer, causalRows * keys);
        TestTensors.AssertClose(SoftmaxReference.Forward(scores, causalRows, keys, causal), probabilities, Atol, Rtol, $"{what} causal forward in place");
        softmax.Backward(gradients.View, buffer.View, gradients.View, causalRows, keys, causal);
        TestTensors.AssertClose(SoftmaxReference.Backward(probabilities, gradient, causalRows, keys, causal), device.Download(gradients, causalRows * keys), BackwardAtol, BackwardRtol, $"{what} causal backward in place");
    }

    [Fact]
    public void Reference_backward_matches_finite_differences()
    {
        const int queries = 3, rows = 2 * queries, columns = 5;
        var options = SoftmaxOptions.CausalMask(queries, causalOffset: 1, scale: 0.7f);
        var x = FiniteDifferences.Random(1, rows * columns, 2);
        var w = FiniteDifferences.Random(2, rows * columns);
        var numeric = FiniteDifferences.Gradient(v => FiniteDifferences.Dot(w, SoftmaxReference.Forward(v, rows, columns, options)), x);
        var analytic = SoftmaxReference.Backward(SoftmaxReference.Forward(x, rows, columns, options), w, rows, columns, options);
        FiniteDifferences.AssertClose(numeric, analytic, 1e-8, 1e-6, "softmax backward");
        Assert.Contains(analytic, g => g == 0); // the mask is exercised
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Bad_arguments_throw_before_launch(string backend)
    {
        var device = devices.Get(backend);
        var softmax = device.Kernels<SoftmaxKernels>();
        using var small = device.Zeros<float>(12);
        using var big = device.Zeros<float>(24);

        var error = Assert.Throws<ArgumentException>(() => softmax.Forward(small.View, big.View, 4, 6));
        Assert.Contains("output has 12 elements but shape [4, 6] needs 24", error.Message);
        Assert.Throws<ArgumentException>(() => softmax.Forward(big.View, big.View, 0, 6));
        Assert.Throws<ArgumentException>(() => softmax.Forward(big.View, big.View, 4, -1));
        error = Assert.Throws<ArgumentException>(() => softmax.Forward(big.View.SubView(1, 12), big.View, 2, 6));
        Assert.Contains("partially overlap", error.Message);
        error = Assert.Throws<ArgumentException>(() => softmax.Forward(big.View, big.View, 4, 6, SoftmaxOptions.CausalMask(3)));
        Assert.Contains("QueryLength", error.Message);
        Assert.Throws<ArgumentException>(() => softmax.Forward(big.View, big.View, 4, 6, SoftmaxOptions.CausalMask(0)));
        Assert.Throws<ArgumentException>(() => softmax.Forward(big.View, big.View, 4, 6, new SoftmaxOptions { Scale = float.NaN }));
        error = Assert.Throws<ArgumentException>(() => softmax.Backward(big.View, big.View, small.View, 4, 6));
        Assert.Contains("dOutput has 12 elements", error.Message);
        Assert.Throws<ArgumentException>(() => softmax.Backward(big.View.SubView(6, 12), big.View.SubView(0, 12), small.View, 2, 6));

        var bad = devices.Get(backend, device.Tuning with { RowGroupSize = 3 });
        error = Assert.Throws<ArgumentException>(() => bad.Kernels<SoftmaxKernels>());
        Assert.Contains("RowGroupSize = 3", error.Message);
    }
}
