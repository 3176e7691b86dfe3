namespace GpuTransformer.Tests.Kernels;

/// <summary>
/// Matmul against <see cref="MatmulReference"/> on every backend. Inputs are uniform in
/// [-1, 1) and K ≤ 100, so float32 sums are good to a few ulps of Σ|a·b| ≤ K: the stated
/// tolerance (atol 1e-5 + rtol 1e-4, or 2e-5 + 2e-4 for K near 100) is well above rounding
/// and well below any indexing error (which moves results by O(1)). Every tile instantiation at
/// shapes spanning several blocks: <see cref="TileSpanningTests"/>.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class MatmulTests(Devices devices)
{
    private const double Atol = 1e-5;
    private const double Rtol = 1e-4;

    private static readonly MatmulLayout[] Layouts = [MatmulLayout.NN, MatmulLayout.NT, MatmulLayout.TN];

    /// <summary>Ragged shapes: single element, below one tile, not multiples of any tile.</summary>
    private static readonly (int M, int N, int K)[] RaggedShapes = [(1, 1, 1), (7, 33, 5), (63, 17, 64), (33, 64, 63)];

    private static ArrayView<float> Tail(MemoryBuffer1D<float, Stride1D.Dense> buffer, int offset) =>
        ((ArrayView<float>)buffer.View).SubView(offset);

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Every_layout_matches_reference_on_ragged_shapes_tiled_and_naive(string backend)
    {
        var device = devices.Get(backend);
        var matmul = device.Kernels<MatmulKernels>();
        foreach (var layout in Layouts)
        {
            foreach (var (m, n, k) in RaggedShapes)
            {
                var a = TestTensors.Random(m + 3 * n, m * k);
                var b = TestTensors.Random(k + 5 * n, k * n);
                var expected = MatmulReference.Multiply(new float[m * n], a, b, m, n, k, layout);
                using var da = device.Upload(a);
                using var db = device.Upload(b);
                using var dc = device.Zeros<float>(m * n);

                matmul.Multiply(dc.View, da.View, db.View, m, n, k, layout);
                TestTensors.AssertClose(expected, device.Download(dc, m * n), Atol, Rtol, $"tiled {layout} {m}x{n}x{k}");

                dc.MemSetToZero(device.Stream);
                matmul.MultiplyNaive(dc.View, da.View, db.View, m, n, k, layout);
                TestTensors.AssertClose(expected, device.Download(dc, m * n), Atol, Rtol, $"naive {layout} {m}x{n}x{k}");
            }
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Bias_alpha_and_each_activation_are_fused(string backend)
    {
        var device = devices.Get(backend);
        var matmul = device.Kernels<MatmulKernels>();
        const int m = 19, n = 37, k = 21;
        // Scale so that pre-activations straddle zero and reach the curved part of GELU.
        var a = TestTensors.Random(11, m * k, 1.5f);
        var b = TestTensors.Random(12, n * k, 1.5f);
        var bias = TestTensors.Random(13, n);
        using var da = device.Upload(a);
        using var db = device.Upload(b);
        using var dbias = device.Upload(bias);
        using var dc = device.Zeros<float>(m * n);
        foreach (var activation in Enum.GetValues<Activation>())
        {
            var epilogue = new MatmulEpilogue { Alpha = 0.5f, Bias = dbias.View, Activation = activation };
            var expected = MatmulReference.Multiply(new float[m * n], a, b, m, n, k, MatmulLayout.NT, alpha: 0.5f, bias: bias, activation: activation);

            matmul.Multiply(dc.View, da.View, db.View, m, n, k, MatmulLayout.NT, epilogue);
            TestTensors.AssertClose(expected, device.Download(dc, m * n), Atol, Rtol, $"tiled NT + bias, alpha 0.5, {activation}");

            matmul.MultiplyNaive(dc.View, da.View, db.View, m, n, k, MatmulLayout.NT, epilogue);
            TestTensors.AssertClose(expected, device.Download(dc, m * n), Atol, Rtol, $"naive NT + bias, alpha 0.5, {activation}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Accumulate_adds_the_product_into_C(string backend)
    {
        var device = devices.Get(backend);
        var matmul = device.Kernels<MatmulKernels>();
        // The weight-gradient shape: dW[out, in] += dYᵀ[out, rows] · X[rows, in].
        const int rows = 45, outputs = 18, inputs = 27;
        var dy = TestTensors.Random(21, rows * outputs);
        var x = TestTensors.Random(22, rows * inputs);
        var dw = TestTensors.Random(23, outputs * inputs);
        var expected = MatmulReference.Multiply(dw, dy, x, outputs, inputs, rows, MatmulLayout.TN, alpha: -2f, accumulate: true);
        using var ddy = device.Upload(dy);
        using var dx = device.Upload(x);
        foreach (var naive in new[] { false, true })
        {
            using var ddw = device.Upload(dw);
            var epilogue = new MatmulEpilogue { Alpha = -2f, Accumulate = true };
            if (naive)
                matmul.MultiplyNaive(ddw.View, ddy.View, dx.View, outputs, inputs, rows, MatmulLayout.TN, epilogue);
            else
                matmul.Multiply(ddw.View, ddy.View, dx.View, outputs, inputs, rows, MatmulLayout.TN, epilogue);
            TestTensors.AssertClose(expected, device.Download(ddw, outputs * inputs), Atol, Rtol, naive ? "naive TN accumulate" : "tiled TN accumulate");
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Leading_dimensions_select_sub_matrices_and_leave_padding_alone(string backend)
    {
        var device = devices.Get(backend);
        var matmul = device.Kernels<MatmulKernels>();
        // A = the q columns of a fused qkv [T, 3E] buffer; B with padded rows; C written into
        // the middle of wider rows that start at an offset. TN reads the same A slice as [K, M].
        const int t = 23, e = 20, n = 13;
        const int lda = 3 * e, ldb = 27, ldc = n + 9, cOffset = 4;
        var qkv = TestTensors.Random(31, t * lda);
        var w = TestTensors.Random(32, t * ldb);
        var c = Enumerable.Repeat(-7f, cOffset + t * ldc).ToArray();  // sentinel in the padding
        using var dqkv = device.Upload(qkv);
        using var dw = device.Upload(w);
        foreach (var layout in Layouts)
        {
            var (m, k) = layout == MatmulLayout.TN ? (e, t) : (t, e);
            var expected = MatmulReference.Multiply(c.AsSpan(cOffset), qkv, w, m, n, k, layout, lda: lda, ldb: ldb, ldc: ldc);
            foreach (var naive in new[] { false, true })
            {
                using var dc = device.Upload(c);
                var cView = Tail(dc, cOffset);
                if (naive)
                    matmul.MultiplyNaive(cView, dqkv.View, dw.View, m, n, k, layout, lda: lda, ldb: ldb, ldc: ldc);
                else
                    matmul.Multiply(cView, dqkv.View, dw.View, m, n, k, layout, lda: lda, ldb: ldb, ldc: ldc);
                var actual = device.Download(dc);
                Assert.All(actual.Take(cOffset), v => Assert.Equal(-7f, v));
                TestTensors.AssertClose(expected, actual.AsSpan(cOffset, expected.Length), Atol, Rtol, $"{(naive ? "naive" : "tiled")} {layout} with ld {lda}/{ldb}/{ldc}");
            }
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Two_level_batches_address_heads_without_transposes(string backend)
    {
        var device = devices.Get(backend);
        var matmul = device.Kernels<MatmulKernels>();
        const int batches = 2, heads = 3, t = 9, d = 5, e = heads * d;
        // qkv [B, T, 3E] with heads interleaved inside E; scores [B, H, T, T].
        var qkv = TestTensors.Random(41, batches * t * 3 * e);
        using var dqkv = device.Upload(qkv);
        using var scores = device.Zeros<float>(batches * heads * t * t);
        var qk = new MatmulBatch(batches, t * 3 * e, t * 3 * e, heads * t * t, heads, d, d, t * t);
        var alpha = 1f / MathF.Sqrt(d);
        var expectedScores = MatmulReference.Multiply(new float[batches * heads * t * t], qkv, qkv.AsSpan(e).ToArray(), t, t, d, MatmulLayout.NT, alpha: alpha, batch: qk, lda: 3 * e, ldb: 3 * e);
        matmul.Multiply(scores.View, dqkv.View, Tail(dqkv, e), t, t, d, MatmulLayout.NT, new MatmulEpilogue { Alpha = alpha }, qk, lda: 3 * e, ldb: 3 * e);
        TestTensors.AssertClose(expectedScores, device.Download(scores), Atol, Rtol, "tiled Q·Kᵀ per (batch, head)");

        // scores · V into the heads' columns of y [B, T, E].
        var probabilities = TestTensors.Random(42, batches * heads * t * t);
        using var dp = device.Upload(probabilities);
        using var y = device.Zeros<float>(batches * t * e);
        var pv = new MatmulBatch(batches, heads * t * t, t * 3 * e, t * e, heads, t * t, d, d);
        var expectedY = MatmulReference.Multiply(new float[batches * t * e], probabilities, qkv.AsSpan(2 * e).ToArray(), t, d, t, MatmulLayout.NN, batch: pv, ldb: 3 * e, ldc: e);
        matmul.Multiply(y.View, dp.View, Tail(dqkv, 2 * e), t, d, t, MatmulLayout.NN, batch: pv, ldb: 3 * e, ldc: e);
        TestTensors.AssertClose(expectedY, device.Download(y), Atol, Rtol, "tiled P·V into [B, T, H·d]");
        y.MemSetToZero(device.Stream);
        matmul.MultiplyNaive(y.View, dp.View, Tail(dqkv, 2 * e), t, d, t, MatmulLayout.NN, batch: pv, ldb: 3 * e, ldc: e);
        TestTensors.AssertClose(expectedY, device.Download(y), Atol, Rtol, "naive P·V into [B, T, H·d]");

        // dV = Pᵀ·dY per head, with a B stride of 0 on the outer level (one dY for every batch entry).
        var dyShared = TestTensors.Random(43, t * e);
        using var ddy = device.Upload(dyShared);
        using var dv = device.Zeros<float>(batches * t * e);
        var tn = new MatmulBatch(batches, heads * t * t, 0, t * e, heads, t * t, d, d);
        var expectedDv = MatmulReference.Multiply(new float[batches * t * e], probabilities, dyShared, t, d, t, MatmulLayout.TN, batch: tn, ldb: e, ldc: e);
        matmul.Multiply(dv.View, dp.View, ddy.View, t, d, t, MatmulLayout.TN, batch: tn, ldb: e, ldc: e);
        TestTensors.AssertClose(expectedDv, device.Download(dv), Atol, Rtol, "tiled Pᵀ·dY with a broadcast B");
    }

    /// <summary>
    /// The few-rows kernel (decoding's NT products, M ≤ a few) called directly and through
    /// <see cref="MatmulKernels.Multiply"/>'s dispatch, against the reference: M = 1, 2, 3 with odd
    /// N and K (below, at and past its eight-lane depth step), every epilogue, and the layouts the
    /// decode path uses: packed Linear outputs, and the key/value projection written into a cache
    /// row (A and B sub-matrices with leading dimensions, C rows of 2E inside [B, Tmax, 2E] with a
    /// sequence batch stride). The padding around C stays untouched.
    /// </summary>
    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Few_rows_kernel_matches_reference_for_every_epilogue_and_the_decode_layouts(string backend)
    {
        var device = devices.Get(backend);
        var matmul = device.Kernels<MatmulKernels>();
        foreach (var (m, n, k) in new[] { (1, 37, 21), (2, 1, 7), (3, 33, 8), (1, 259, 128), (2, 65, 9) })
        {
            var a = TestTensors.Random(51 + m, m * k, 1.5f);
            var b = TestTensors.Random(52 + n, n * k, 1.5f);
            var bias = TestTensors.Random(53, n);
            var c0 = TestTensors.Random(54, m * n);
            using var da = device.Upload(a);
            using var db = device.Upload(b);
            using var dbias = device.Upload(bias);
            foreach (var activation in Enum.GetValues<Activation>())
            {
                foreach (var accumulate in new[] { false, true })
                {
                    var epilogue = new MatmulEpilogue { Alpha = 0.5f, Accumulate = accumulate, Bias = dbias.View, Activation = activation };
                    var expected = MatmulReference.Multiply((float[])c0.Clone(), a, b, m, n, k, MatmulLayout.NT, alpha: 0.5f, accumulate: accumulate, bias: bias, activation: activation);
                    foreach (var direct in new[] { true, false })
                    {
                        using var dc = device.Upload(c0);
                        if (direct)
                            matmul.MultiplyFewRows(dc.View, da.View, db.View, m, n, k, epilogue);
                        else
                            matmul.Multiply(dc.View, da.View, db.View, m, n, k, MatmulLayout.NT, epilogue);
                        TestTensors.AssertClose(expected, device.Download(dc), Atol, Rtol, $"{(direct ? "few rows" : "dispatch")} {m}x{n}x{k} {activation} accumulate {accumulate}");
                    }
                }
            }
        }

        // k | v of one new position per sequence into a cache [B, Tmax, 2E] at position 3: A the
        // tokens [B, 1, E] (rows of a wider buffer), B the k|v rows of in_proj [3E, E] (from row E).
        const int batches = 2, e = 11, tmax = 5, position = 3, lda = e + 2;
        var x = TestTensors.Random(61, batches * lda);
        var w = TestTensors.Random(62, 3 * e * e);
        var inBias = TestTensors.Random(63, 3 * e);
        var cache = Enumerable.Repeat(-7f, batches * tmax * 2 * e).ToArray();
        var layout = new MatmulBatch(batches, lda, 0, tmax * 2 * e);
        float[] expectedCache = [.. cache.AsSpan(0, position * 2 * e), .. MatmulReference.Multiply(cache.AsSpan(position * 2 * e), x, w.AsSpan(e * e).ToArray(), 1, 2 * e, e, MatmulLayout.NT,
            bias: inBias.AsSpan(e).ToArray(), batch: layout, lda: lda)];
        using var dx = device.Upload(x);
        using var dw = device.Upload(w);
        using var dInBias = device.Upload(inBias);
        foreach (var direct in new[] { true, false })
        {
            using var dcache = device.Upload(cache);
            var target = Tail(dcache, position * 2 * e);
            var epilogue = new MatmulEpilogue { Bias = Tail(dInBias, e) };
            if (direct)
                matmul.MultiplyFewRows(target, dx.View, Tail(dw, e * e), 1, 2 * e, e, epilogue, layout, lda: lda);
            else
                matmul.Multiply(target, dx.View, Tail(dw, e * e), 1, 2 * e, e, MatmulLayout.NT, epilogue, layout, lda: lda);
            TestTensors.AssertClose(expectedCache, device.Download(dcache), Atol, Rtol, $"{(direct ? "few rows" : "dispatch")} k|v into cache rows");
        }
        Assert.Throws<ArgumentException>(() => matmul.MultiplyFewRows(Tail(dx, 1), dx.View, dw.View, 1, 2, e));
    }

    /// <summary>
    /// The warp-tiled GPU tile (<see cref="MatmulTile.Tile128x128"/>) on shapes spanning two
    /// full 128×128 blocks plus a ragged edge and a ragged last slice, with every epilogue
    /// option, in both instantiations (128-bit global loads when N keeps every row 16-byte
    /// aligned, scalar loads when it does not) and with split-K forced by
    /// <see cref="KernelTuning.MatmulMinimumGroups"/>: against the reference, and bit-for-bit
    /// the same on a second run. Unsplit in every layout (the device TileSpanningTests' 128×128
    /// row shares, so its kernels compile once); split in NN with vector loads and TN with scalar
    /// loads only: the split is layout-independent code, and each (layout, load) pair is one more
    /// PoCL compile of ~20 s on a fresh machine (all six made this the suite's slowest test, 4 min).
    /// </summary>
    [Fact]
    public void Warp_tiled_tile_runs_vector_and_scalar_loads_and_split_depth()
    {
        const int m = 300, k = 100;
        foreach (var minimumGroups in new[] { 0, 64 })
        {
            var device = devices.WithGroupsOf(256, t => t with { Matmul = MatmulTile.Tile128x128, MatmulMinimumGroups = minimumGroups });
            Assert.SkipWhen(device is null, $"no backend here runs 256-thread groups (PoCL: {Devices.WhyMissing("opencl")})");
            var matmul = device.Kernels<MatmulKernels>();
            foreach (var n in new[] { 292, 290 })
            {
                var bias = TestTensors.Random(61, n);
                var c0 = TestTensors.Random(62, m * n);
                using var dbias = device.Upload(bias);
                MatmulLayout[] layouts = minimumGroups == 0 ? Layouts : [n % 4 == 0 ? MatmulLayout.NN : MatmulLayout.TN];
                foreach (var layout in layouts)
                {
                    var a = TestTensors.Random(63, m * k);
                    var b = TestTensors.Random(64, k * n);
                    var what = $"{layout} {m}x{n}x{k}, minimum groups {minimumGroups}";
                    var expected = MatmulReference.Multiply(c0, a, b, m, n, k, layout, alpha: 0.5f, accumulate: true, bias: bias, activation: Activation.Gelu);
                    using var da = device.Upload(a);
                    using var db = device.Upload(b);
                    using var dc = device.Upload(c0);
                    var epilogue = new MatmulEpilogue { Alpha = 0.5f, Accumulate = true, Bias = dbias.View, Activation = Activation.Gelu };
                    matmul.Multiply(dc.View, da.View, db.View, m, n, k, layout, epilogue);
                    var first = device.Download(dc, m * n);
                    TestTensors.AssertClose(expected, first, 2 * Atol, 2 * Rtol, what);

                    dc.CopyFromCPU(c0);
                    matmul.Multiply(dc.View, da.View, db.View, m, n, k, layout, epilogue);
                    Assert.True(Bitwise.Bits(first).SequenceEqual(Bitwise.Bits(device.Download(dc, m * n))), $"{what}: a second run differs");
                }
            }
        }
    }

    [Fact]
    public void Tiles_that_need_more_threads_than_the_device_allows_are_refused()
    {
        Assert.SkipUnless(Devices.Available.Contains("cpu"), $"the simulator is not among the test backends ({Devices.TestBackendsVariable})");
        var tuning = devices.Get("cpu").Tuning with { Matmul = MatmulTile.Tile128x128 };
        var device = devices.Get("cpu", tuning);
        var error = Assert.Throws<InvalidOperationException>(() => device.Kernels<MatmulKernels>());
        Assert.Contains("256 threads", error.Message);
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Bad_input_throws_before_launch_naming_the_shapes(string backend)
    {
        var device = devices.Get(backend);
        var matmul = device.Kernels<MatmulKernels>();
        using var a = device.Zeros<float>(6 * 4);     // A [6, 4]
        using var b = device.Zeros<float>(4 * 5);     // B [4, 5]
        using var c = device.Zeros<float>(6 * 5);     // C [6, 5]
        using var small = device.Zeros<float>(10);

        void Throws(Action call, params string[] fragments)
        {
            var error = Assert.Throws<ArgumentException>(call);
            foreach (var fragment in fragments)
                Assert.Contains(fragment, error.Message, StringComparison.Ordinal);
        }

        Throws(() => matmul.Multiply(small.View, a.View, b.View, 6, 5, 4), "c has 10 elements", "C [6, 5]", "NN M=6 N=5 K=4");
        Throws(() => matmul.Multiply(c.View, small.View, b.View, 6, 5, 4), "a has 10 elements", "A [6, 4]");
        Throws(() => matmul.Multiply(c.View, a.View, small.View, 6, 5, 4), "b has 10 elements", "B [4, 5]");
        Throws(() => matmul.Multiply(c.View, a.View, b.View, 5, 6, 4, MatmulLayout.NT), "b has 20 elements", "B [6, 4]", "NT M=5 N=6 K=4");
        Throws(() => matmul.Multiply(c.View, a.View, b.View, 0, 5, 4), "positive", "M=0");
        Throws(() => matmul.MultiplyNaive(c.View, a.View, b.View, 6, -1, 4), "positive", "N=-1");
        Throws(() => matmul.Multiply(c.View, a.View, b.View, 6, 5, 4, lda: 3), "lda = 3", "row length 4", "A [6, 4]");
        Throws(() => matmul.Multiply(c.View, a.View, b.View, 6, 5, 4, ldc: 4), "ldc = 4", "C [6, 5]");
        Throws(() => matmul.Multiply(a.View.SubView(0, 20), a.View, b.View, 4, 5, 4), "C and A overlap");
        Throws(() => matmul.Multiply(c.View, a.View, b.View, 6, 5, 4, epilogue: new MatmulEpilogue { Bias = small.View.SubView(0, 3) }), "bias has 3 elements", "bias [5]");
        Throws(() => matmul.Multiply(c.View, a.View, b.View, 6, 5, 4, epilogue: new MatmulEpilogue { Bias = c.View.SubView(0, 5) }), "C and bias overlap");
        Throws(() => matmul.Multiply(c.View, a.View, b.View, 3, 5, 4, batch: new MatmulBatch(2, 12, 0, 0)), "same C");
        Throws(() => matmul.Multiply(c.View, a.View, b.View, 3, 5, 4, batch: new MatmulBatch(2, -12, 0, 15)), "must not be negative");
        Throws(() => matmul.Multiply(c.View, a.View, b.View, 3, 5, 4, batch: new MatmulBatch(3, 12, 0, 15)), "a has 24 elements", "batch 3×1");
    }
}
