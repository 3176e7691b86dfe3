namespace GpuTransformer.Tests.Kernels;

[Collection(DeviceCollection.Name)]
public sealed class EmbeddingTests(Devices devices)
{
    /// <summary>Ids with heavy repetition (so the backward has real buckets) and an absent id.</summary>
    private static int[] Tokens(int seed, int count, int vocabulary)
    {
        var tokens = TestTensors.RandomInts(seed, count, vocabulary - 1); // id V−1 never occurs
        for (var n = 0; n < count; n += 3)
            tokens[n] = 2; // one frequent token
        return tokens;
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Buckets_are_positions_sorted_stably_by_token(string backend)
    {
        using var buckets = new TokenBuckets(devices.Get(backend));
        foreach (var (count, vocabulary) in new[] { (63, 9), (1, 1), (20, 40) })
        {
            var tokens = Tokens(count, count, Math.Max(vocabulary, 4)).Select(t => t % vocabulary).ToArray();
            buckets.Build(tokens, vocabulary);
            var expectedPositions = Enumerable.Range(0, count).OrderBy(n => tokens[n]).ToArray(); // OrderBy is stable
            var expectedUnique = tokens.Distinct().Order().ToArray();
            Assert.Equal(expectedPositions, buckets.HostPositions.ToArray());
            Assert.Equal(expectedUnique, buckets.HostUniqueTokens.ToArray());
            var offsets = buckets.HostOffsets.ToArray();
            Assert.Equal(expectedUnique.Length + 1, offsets.Length);
            for (var u = 0; u < expectedUnique.Length; u++)
                Assert.Equal(tokens.Count(t => t == expectedUnique[u]), offsets[u + 1] - offsets[u]);
            Assert.Equal(count, offsets[^1]);
            Assert.Equal(tokens, buckets.Device.Download(buckets.Tokens));
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Forward_matches_reference_with_and_without_positional_encoding(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<EmbeddingKernels>();
        using var buckets = new TokenBuckets(device);
        foreach (var (count, vocabulary, channels, positions) in new (int, int, int, SinusoidalPositions?)[]
        {
            (1, 1, 1, null),
            (33, 13, 7, null),
            (33, 13, 7, new SinusoidalPositions(11)),
            (12, 5, 64, new SinusoidalPositions(3, Offset: 10_000)),
        })
        {
            var tokens = TestTensors.RandomInts(count, count, vocabulary);
            var table = TestTensors.Random(channels, vocabulary * channels);
            var scale = MathF.Sqrt(channels);
            buckets.Build(tokens, vocabulary);
            using var dTable = device.Upload(table);
            using var output = device.Zeros<float>(count * channels);
            kernels.Forward(output.View, buckets, dTable.View, channels, scale, positions);
            // One float product (+ the PE, ≤ 1e-6 off; see PositionalEncodingTests) against double.
            TestTensors.AssertClose(
                EmbeddingReference.Forward(tokens, table, channels, scale, positions), device.Download(output, count * channels),
                positions is null ? 0 : 1e-6, 1e-7, $"N={count} V={vocabulary} C={channels} PE={positions}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Device_ids_out_of_range_give_NaN_rows_not_out_of_bounds_reads(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<EmbeddingKernels>();
        const int vocabulary = 4, channels = 3;
        int[] tokens = [1, -1, 4, 3];
        var table = TestTensors.Random(1, vocabulary * channels);
        using var dTokens = device.Upload(tokens);
        using var dTable = device.Upload(table);
        using var output = device.Zeros<float>(tokens.Length * channels);
        kernels.Forward(output.View, dTokens.View, dTable.View, tokens.Length, vocabulary, channels);
        var actual = device.Download(output, tokens.Length * channels);
        for (var c = 0; c < channels; c++)
        {
            Assert.Equal(table[1 * channels + c], actual[c]);
            Assert.True(float.IsNaN(actual[1 * channels + c]) && float.IsNaN(actual[2 * channels + c]));
            Assert.Equal(table[3 * channels + c], actual[3 * channels + c]);
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Backward_matches_reference_and_is_bit_reproducible(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<EmbeddingKernels>();
        using var buckets = new TokenBuckets(device);
        const int count = 63, vocabulary = 9, channels = 33;
        const float scale = 5.5f;
        var tokens = Tokens(7, count, vocabulary);
        var dy = TestTensors.Random(8, count * channels);
        var stale = TestTensors.Random(9, vocabulary * channels, 100f); // must be overwritten
        buckets.Build(tokens, vocabulary);
        using var dOutput = device.Upload(dy);
        using var dTable = device.Upload(stale);

        kernels.Backward(dTable.View, dOutput.View, buckets, channels, scale);
        var first = device.Download(dTable, vocabulary * channels);
        // ~21 terms of |dy·scale| ≤ 5.5 summed in float: ≤ 21 roundings of ≤ 60 → < 1e-4 absolute worst case.
        TestTensors.AssertClose(EmbeddingReference.Backward(stale, dy, tokens, channels, scale), first, 2e-5, 1e-6, "dTable");
        Assert.All(first.AsSpan((vocabulary - 1) * channels).ToArray(), v => Assert.Equal(0f, v)); // absent token

        dTable.View.CopyFromCPU(device.Stream, stale);
        kernels.Backward(dTable.View, dOutput.View, buckets, channels, scale);
        var second = device.Download(dTable, vocabulary * channels);
        Assert.Equal(Bitwise.Bits(first), Bitwise.Bits(second));
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Backward_accumulates_for_weight_tying(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<EmbeddingKernels>();
        using var buckets = new TokenBuckets(device);
        const int count = 17, vocabulary = 6, channels = 5;
        var tokens = Tokens(3, count, vocabulary);
        var dy = TestTensors.Random(4, count * channels);
        var existing = TestTensors.Random(5, vocabulary * channels); // the output projection's gradient
        buckets.Build(tokens, vocabulary);
        using var dOutput = device.Upload(dy);
        using var dTable = device.Upload(existing);
        kernels.Backward(dTable.View, dOutput.View, buckets, channels, 1f, accumulate: true);
        TestTensors.AssertClose(
            EmbeddingReference.Backward(existing, dy, tokens, channels, 1f, accumulate: true), device.Download(dTable, vocabulary * channels),
            1e-6, 1e-6, "dTable += ");
    }

    [Fact]
    public void Reference_backward_matches_finite_differences()
    {
        // L(table) = Σ w · (embedding + PE) in double; affine in the table, so central differences
        // (h = 1e-5) are exact up to rounding (~1e-11). Token 3 is absent: its gradient must be 0.
        const int vocabulary = 4, channels = 3;
        const double scale = 1.5;
        int[] tokens = [2, 0, 2, 2, 1, 0];
        var positions = new SinusoidalPositions(3, 5);
        var table = FiniteDifferences.Random(1, vocabulary * channels);
        var w = FiniteDifferences.Random(2, tokens.Length * channels);
        var numeric = FiniteDifferences.Gradient(v => FiniteDifferences.Dot(w, EmbeddingReference.Forward(tokens, v, channels, scale, positions)), table);
        var analytic = EmbeddingReference.Backward(new double[vocabulary * channels], w, tokens, channels, scale);
        FiniteDifferences.AssertClose(numeric, analytic, 1e-8, 1e-8, "dTable");
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Bad_input_throws_before_upload_or_launch(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<EmbeddingKernels>();
        using var buckets = new TokenBuckets(device);
        var error = Assert.Throws<ArgumentException>(() => buckets.Build([0, 3, 7, 1], 5));
        Assert.Contains("Token id 7 at position 2", error.Message);
        Assert.Contains("[0, 5)", error.Message);
        error = Assert.Throws<ArgumentException>(() => buckets.Build([0, -2], 5));
        Assert.Contains("Token id -2 at position 1", error.Message);
        Assert.Throws<ArgumentException>(() => buckets.Build([], 5));
        Assert.Throws<ArgumentException>(() => buckets.Build([0], 0));

        using var table = device.Zeros<float>(5 * 4);
        using var output = device.Zeros<float>(6 * 4);
        Assert.Throws<ArgumentException>(() => kernels.Forward(output.View, buckets, table.View, 4)); // not built yet
        buckets.Build([0, 1, 2, 3, 4, 0], 5);
        kernels.Forward(output.View, buckets, table.View, 4);
        error = Assert.Throws<ArgumentException>(() => kernels.Forward(output.View, buckets, table.View, 5));
        Assert.Contains("output has 24 elements", error.Message);
        error = Assert.Throws<ArgumentException>(() => kernels.Forward(output.View, buckets, table.View, 4, 1f, new SinusoidalPositions(4)));
        Assert.Contains("not whole sequences", error.Message);
        Assert.Throws<ArgumentException>(() => kernels.Forward(output.View, buckets, table.View, 4, 1f, new SinusoidalPositions(3, -1)));
        Assert.Throws<ArgumentException>(() => kernels.Backward(table.View.SubView(0, 19), output.View, buckets, 4));
        Assert.Throws<ArgumentException>(() => kernels.Backward(table.View, table.View, buckets, 4));
        using var other = ComputeDevice(backend);
        using var foreign = new TokenBuckets(other);
        foreign.Build([0], 5);
        error = Assert.Throws<ArgumentException>(() => kernels.Backward(table.View, output.View, foreign, 4));
        Assert.Contains("another device", error.Message);
    }

    private static GpuTransformer.Kernels.Backends.ComputeDevice ComputeDevice(string backend) =>
        GpuTransformer.Kernels.Backends.ComputeDevice.Create(backend, new GpuTransformer.Kernels.Backends.DeviceOptions { AllowPortableOpenCL = true });
}
