namespace GpuTransformer.Tests.Kernels;

[Collection(DeviceCollection.Name)]
public sealed class ReductionTests(Devices devices)
{

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Column_sums_match_reference_and_repeat_bit_for_bit(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<ReductionKernels>();
        // 1 and 16 rows: one pass; 17, 63: two passes (ragged last block); 300: three; 4097: four (scratch regions reused).
        foreach (var (rows, columns) in new[] { (1, 1), (16, 7), (17, 1), (63, 33), (300, 5), (4097, 3) })
        {
            var x = TestTensors.Random(rows + columns, rows * columns);
            var existing = TestTensors.Random(7, columns);
            using var input = device.Upload(x);
            using var output = device.Upload(existing);
            // A 16-ary tree of float sums of ≤ 4097 values in [−1, 1]: ≲ 2e-6 absolute; 1e-5 allowed.
            kernels.ColumnSums(output.View, input.View, rows, columns, accumulate: true);
            TestTensors.AssertClose(ReductionReference.ColumnSums(x, rows, columns, existing, accumulate: true), device.Download(output, columns), 1e-5, 1e-6, $"accumulate {rows}x{columns}");
            kernels.ColumnSums(output.View, input.View, rows, columns);
            var first = device.Download(output, columns);
            TestTensors.AssertClose(ReductionReference.ColumnSums(x, rows, columns), first, 1e-5, 1e-6, $"{rows}x{columns}");
            kernels.ColumnSums(output.View, input.View, rows, columns);
            Assert.Equal(Bitwise.Bits(first), Bitwise.Bits(device.Download(output, columns)));
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Sum_matches_reference_and_repeats_bit_for_bit(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<ReductionKernels>();
        // One group, a ragged few, and (off the simulator, where thousands of groups with barriers take
        // seconds) thousands of partials, which the final one-group pass strides over.
        int[] sizes = device.Backend == Backend.Cpu ? [1, 7, 257, 5000] : [1, 7, 257, 5000, 300_000, 20_000_000];
        foreach (var n in sizes)
        {
            var x = TestTensors.Random(n, n);
            using var input = device.Upload(x);
            using var result = device.Zeros<float>(1);
            kernels.Sum(result.View, input.View, n);
            var first = device.Download(result, 1);
            // Σ of n values in [−1, 1], ~√n in size; float partials of ≤ 300 elements then a tree: ≲ 1e-6·√n·log.
            TestTensors.AssertClose([ReductionReference.Sum(x)], first, 1e-5 * Math.Sqrt(n), 0, $"sum n={n}");
            kernels.Sum(result.View, input.View, n);
            Assert.Equal(Bitwise.Bits(first), Bitwise.Bits(device.Download(result, 1)));
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Global_norm_over_ragged_buffers_matches_double_reference(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<ReductionKernels>();
        int[] sizes = device.Backend == Backend.Cpu ? [1, 7, 33, 1000, 4097] : [1, 7, 33, 1000, 4097, 3_000_001];
        var buffers = sizes.Select((n, i) => TestTensors.Random(i, n, 1f / (i + 1))).ToArray();
        var uploaded = buffers.Select(device.Upload).ToArray();
        try
        {
            var slots = sizes.Sum(kernels.PartialCount);
            using var partials = device.Zeros<float>(slots);
            using var result = device.Zeros<float>(2);
            var expected = ReductionReference.GlobalNorm(buffers);
            foreach (var maxNorm in new[] { float.PositiveInfinity, 1f, expected * 2 })
            {
                var offset = 0;
                for (var i = 0; i < buffers.Length; i++)
                    offset = kernels.SumOfSquares(partials.View, offset, uploaded[i].View, sizes[i]);
                Assert.Equal(slots, offset);
                kernels.GlobalNorm(result.View, partials.View, slots, maxNorm);
                var actual = device.Download(result, 2);
                // Squares are positive: float partial sums stay within ~1e-6 relative.
                TestTensors.AssertClose([expected, ReductionReference.ClipFactor(expected, maxNorm)], actual, 0, 2e-6, $"norm, clip factor (max {maxNorm})");
            }
        }
        finally
        {
            foreach (var buffer in uploaded)
                buffer.Dispose();
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Bad_arguments_throw_before_launch(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<ReductionKernels>();
        using var buffer = device.Zeros<float>(64);
        using var small = device.Zeros<float>(2);
        var error = Assert.Throws<ArgumentException>(() => kernels.ColumnSums(small.View, buffer.View, 8, 8));
        Assert.Contains("output has 2 elements", error.Message);
        Assert.Throws<ArgumentException>(() => kernels.ColumnSums(buffer.View, small.View, 2, 2));
        Assert.Throws<ArgumentException>(() => kernels.ColumnSums(small.View, buffer.View, -1, 2));
        Assert.Throws<ArgumentException>(() => kernels.ColumnSums(buffer.View.SubView(0, 8), buffer.View, 8, 8));
        Assert.Throws<ArgumentException>(() => kernels.Sum(small.View, buffer.View, 65));
        Assert.Throws<ArgumentException>(() => kernels.Sum(small.View, buffer.View, 0));
        Assert.Throws<ArgumentException>(() => kernels.SumOfSquares(small.View, 2, buffer.View, 64));
        Assert.Throws<ArgumentException>(() => kernels.SumOfSquares(small.View, -1, buffer.View, 64));
        Assert.Throws<ArgumentException>(() => kernels.GlobalNorm(small.View.SubView(0, 1), buffer.View, 4));
        Assert.Throws<ArgumentException>(() => kernels.GlobalNorm(small.View, buffer.View, 4, maxNorm: 0));
        Assert.Throws<ArgumentException>(() => kernels.GlobalNorm(small.View, buffer.View, 65));
        // Overlap is judged on the ranges used: result after the partials of one scratch is fine.
        kernels.GlobalNorm(buffer.View.SubView(60, 2), buffer.View, 4);
        Assert.Throws<ArgumentException>(() => kernels.GlobalNorm(buffer.View.SubView(3, 2), buffer.View, 4));
    }
}
