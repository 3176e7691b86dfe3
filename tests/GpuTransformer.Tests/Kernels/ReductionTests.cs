using GpuTransformer.Training.Generation;

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

    /// <summary>
    /// The device argmax against the host's greedy choice (<see cref="TokenSampler"/> with greedy
    /// options, banned ids as −∞, ties to the lowest id) on rows built to catch the edge cases:
    /// ties (several columns at the maximum, across the threads of a group), the maximum on an
    /// excluded column, the first and last column, a row of −∞; and −1 for a row with a NaN.
    /// </summary>
    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Row_argmax_picks_what_the_host_greedy_choice_picks(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<ReductionKernels>();
        const int columns = 259;
        int[] excluded = [0, 1, 200];
        var rows = new List<float[]>();
        for (var seed = 0; seed < 4; seed++)
            rows.Add(TestTensors.Random(70 + seed, columns));
        var ties = TestTensors.Random(80, columns);
        ties[17] = ties[130] = ties[258] = 5f;                      // first of three equal maxima
        rows.Add(ties);
        var onExcluded = TestTensors.Random(81, columns);
        onExcluded[1] = onExcluded[200] = 9f;                       // the largest are banned
        onExcluded[3] = 4f;
        rows.Add(onExcluded);
        var last = TestTensors.Random(82, columns);
        last[columns - 1] = 3f;
        rows.Add(last);
        var first = TestTensors.Random(83, columns);
        first[2] = first[0] = 3f;                                   // column 0 banned: 2
        rows.Add(first);
        rows.Add(Enumerable.Repeat(float.NegativeInfinity, columns).ToArray());
        float[] logits = [.. rows.SelectMany(r => r)];
        using var dlogits = device.Upload(logits);
        using var dexcluded = device.Upload(excluded);
        using var ids = device.Zeros<int>(rows.Count);

        kernels.RowArgmax(ids.View, dlogits.View, rows.Count, columns, dexcluded.View);
        var sampler = new TokenSampler(new SamplingOptions { Greedy = true }, excluded);
        Assert.Equal([.. rows.Select(r => sampler.Next(r))], device.Download(ids));
        Assert.Equal([17, 3, columns - 1, 2], device.Download(ids).Skip(4).Take(4));

        // Nothing excluded: the plain argmax; a NaN anywhere in a row gives −1.
        var plain = new TokenSampler(new SamplingOptions { Greedy = true });
        kernels.RowArgmax(ids.View, dlogits.View, rows.Count, columns);
        Assert.Equal([.. rows.Select(r => plain.Next(r))], device.Download(ids));
        logits[columns + 100] = float.NaN;
        using var withNaN = device.Upload(logits);
        kernels.RowArgmax(ids.View, withNaN.View, 2, columns);
        Assert.Equal([plain.Next(rows[0]), -1], device.Download(ids).Take(2));

        Assert.Throws<ArgumentException>(() => kernels.RowArgmax(ids.View, dlogits.View, rows.Count + 1, columns));
        Assert.Throws<ArgumentException>(() => kernels.RowArgmax(ids.View.SubView(0, 2), dlogits.View, 3, columns));
        Assert.Throws<ArgumentException>(() => kernels.RowArgmax(ids.View, dlogits.View, 1, 0));
    }
}
