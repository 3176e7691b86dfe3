namespace GpuTransformer.Tests.Kernels;

[Collection(DeviceCollection.Name)]
public sealed class AttentionTests(Devices devices)
{
    // Tolerances against the double reference: |actual − expected| ≤ Atol + Rtol·|expected|.
    internal const double Atol = 2e-5;
    internal const double Rtol = 1e-4;
    internal const double ProbabilityAtol = 2e-6;

    // Elements of a buffer that no kernel may write (strided layouts leave gaps).
    internal const float Untouched = 7.25f;

    /// <summary>
    /// One attention problem. Padding: "none", "some" (random keys of every sequence),
    /// "last" (random keys, and the last sequence fully padded). Fused: q, k, v are thirds of
    /// one [B, T, 3E] buffer, and dQ, dK, dV thirds of one dQKV buffer.
    /// </summary>
    public sealed record Case(
        string Name, AttentionShape Shape, bool Causal = false, int CausalOffset = 0,
        string Padding = "none", bool Fused = false, float? Scale = null)
    {
        public override string ToString() => Name;
    }

    internal static readonly Case[] Cases =
    [
        new("plain B2 H2 T33 d8", new(2, 2, 33, 33, 8)),
        new("causal B1 H2 T63 d64", new(1, 2, 63, 63, 64), Causal: true),
        new("causal offset Tq7 Tk33 d33", new(2, 1, 7, 33, 33), Causal: true, CausalOffset: 26),
        new("causal negative offset T33 d8 (rows without keys)", new(1, 1, 33, 33, 8), Causal: true, CausalOffset: -5),
        new("padding, last sequence fully padded, Tq7 Tk33 d16", new(2, 2, 7, 33, 16), Padding: "last"),
        new("cross attention Tq33 Tk7 d1 scale 0.7", new(1, 2, 33, 7, 1), Scale: 0.7f),
        new("fused qkv causal B2 T7 H3 d16", new(2, 3, 7, 7, 16), Causal: true, Fused: true),
        new("decode step Tq1 Tk63 d64 causal offset 62, padding", new(2, 2, 1, 63, 64), Causal: true, CausalOffset: 62, Padding: "some"),
        new("head 128 causal T7, padding", new(1, 1, 7, 7, 128), Causal: true, Padding: "some"),
    ];

    public static TheoryData<string, string> BackendsAndCases()
    {
        var data = new TheoryData<string, string>();
        foreach (var backend in Devices.Available)
        {
            foreach (var c in Cases)
                data.Add(backend, c.Name);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(BackendsAndCases))]
    public void Forward_backward_and_probabilities_match_reference(string backend, string caseName)
    {
        var device = devices.Get(backend);
        Check(device, Cases.Single(c => c.Name == caseName));
    }

    /// <summary>
    /// Flash-decoding on the register-tiled GPU kernels: one or a few query rows over a long key
    /// cache, its keys split across groups (forced by <see cref="KernelTuning.AttentionMinimumGroups"/>)
    /// and merged in split order, causal with an offset and padded, at both head bounds; and a
    /// head size between the bounds (TileSpanningTests spans their blocks).
    /// </summary>
    [Fact]
    public void Register_tiled_forward_splits_keys_when_decoding()
    {
        var device = devices.WithGroupsOf(AttentionKernels.ThreadsPerGroup(AttentionTile.RegisterTiled), t => t with { Attention = AttentionTile.RegisterTiled });
        Assert.SkipWhen(device is null, $"no backend here runs {AttentionKernels.ThreadsPerGroup(AttentionTile.RegisterTiled)}-thread groups (PoCL: {Devices.WhyMissing("opencl")})");
        Check(device, new Case("d100 cross Tq37 Tk45 scale 0.3", new(1, 1, 37, 45, 100), Scale: 0.3f));
        var decoding = devices.Get(device.Description.BackendName, device.Tuning with { AttentionMinimumGroups = 64 });
        Check(decoding, new Case("decoding Tq1 Tk200 d64 causal offset 199, padding", new(2, 2, 1, 200, 64), Causal: true, CausalOffset: 199, Padding: "some"));
        Check(decoding, new Case("decoding Tq3 Tk90 d128, last sequence padded", new(2, 1, 3, 90, 128), Padding: "last"));
    }

    private static readonly string[] GoldenCases = ["attention_noncausal", "attention_causal", "attention_keypad", "attention_cross"];

    public static TheoryData<string, string> BackendsAndGoldenFiles()
    {
        var data = new TheoryData<string, string>();
        foreach (var backend in Devices.Available)
        {
            foreach (var name in GoldenCases)
                data.Add(backend, name);
        }
        return data;
    }

    /// <summary>O, LSE, P, dQ, dK, dV against PyTorch (float64 autograd) from tests/golden, same tolerances as against the reference.</summary>
    [Theory]
    [MemberData(nameof(BackendsAndGoldenFiles))]
    public void Matches_PyTorch_golden_files(string backend, string name)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<AttentionKernels>();
        var file = GoldenFilesTests.Load(name);
        var qShape = file.Get("q").Shape; // [B, Tq, H, d]
        var kShape = file.Get("k").Shape; // [B, Tk, H, d]
        var shape = new AttentionShape(qShape[0], qShape[2], qShape[1], kShape[1], qShape[3]);
        using var q = device.Upload(file.Floats("q"));
        using var k = device.Upload(file.Floats("k"));
        using var v = device.Upload(file.Floats("v"));
        using var dOut = device.Upload(file.Floats("dO"));
        using var mask = device.Upload(file.Tensors.ContainsKey("key_padding_mask") ? file.Ints("key_padding_mask") : []);
        var options = new AttentionOptions
        {
            Scale = (float)double.Parse(file.Metadata["scale"], System.Globalization.CultureInfo.InvariantCulture),
            Causal = file.Metadata["causal"] == "true",
            KeyPaddingMask = file.Tensors.ContainsKey("key_padding_mask") ? mask.View.SubView(0, shape.Batch * shape.KeyLength) : default,
        };
        var n = shape.Batch * shape.QueryLength * shape.Heads * shape.HeadDim;
        var nk = shape.Batch * shape.KeyLength * shape.Heads * shape.HeadDim;
        var rows = shape.Batch * shape.Heads * shape.QueryLength;
        using var o = device.Zeros<float>(n);
        using var lse = device.Zeros<float>(rows);
        using var rowDot = device.Zeros<float>(rows);
        using var dq = device.Zeros<float>(n);
        using var dk = device.Zeros<float>(nk);
        using var dv = device.Zeros<float>(nk);
        using var p = device.Zeros<float>(rows * shape.KeyLength);

        kernels.Forward(o.View, lse.View, q.View, k.View, v.View, shape, options);
        kernels.Backward(dq.View, dk.View, dv.View, rowDot.View, dOut.View, o.View, lse.View, q.View, k.View, v.View, shape, options);
        kernels.Probabilities(p.View, q.View, k.View, shape, options);
        TestTensors.AssertClose(file.Floats("O"), device.Download(o), Atol, Rtol, $"{name}: O");
        TestTensors.AssertClose(file.Floats("LSE"), device.Download(lse), Atol, Rtol, $"{name}: LSE");
        TestTensors.AssertClose(file.Floats("P"), device.Download(p), ProbabilityAtol, Rtol, $"{name}: P");
        TestTensors.AssertClose(file.Floats("dQ"), device.Download(dq), Atol, Rtol, $"{name}: dQ");
        TestTensors.AssertClose(file.Floats("dK"), device.Download(dk), Atol, Rtol, $"{name}: dK");
        TestTensors.AssertClose(file.Floats("dV"), device.Download(dv), Atol, Rtol, $"{name}: dV");
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Backward_is_deterministic(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<AttentionKernels>();
        var shape = new AttentionShape(1, 2, 33, 33, 16);
        var options = new AttentionOptions { Causal = true };
        var n = shape.Batch * shape.QueryLength * shape.Heads * shape.HeadDim;
        var rows = shape.Batch * shape.Heads * shape.QueryLength;
        using var q = device.Upload(TestTensors.Random(1, n));
        using var k = device.Upload(TestTensors.Random(2, n));
        using var v = device.Upload(TestTensors.Random(3, n));
        using var dOut = device.Upload(TestTensors.Random(4, n));
        using var o = device.Zeros<float>(n);
        using var lse = device.Zeros<float>(rows);
        using var rowDot = device.Zeros<float>(rows);
        using var dq = device.Zeros<float>(n);
        using var dk = device.Zeros<float>(n);
        using var dv = device.Zeros<float>(n);
        kernels.Forward(o.View, lse.View, q.View, k.View, v.View, shape, options);
        float[][] Run()
        {
            kernels.Backward(dq.View, dk.View, dv.View, rowDot.View, dOut.View, o.View, lse.View, q.View, k.View, v.View, shape, options);
            return [device.Download(dq), device.Download(dk), device.Download(dv)];
        }
        var first = Run();
        var second = Run();
        for (var t = 0; t < 3; t++)
            Assert.Equal(first[t], second[t]);
        Assert.Contains(first[0], x => x != 0f);
    }

    [Fact]
    public void Reference_backward_matches_finite_differences()
    {
        var shape = new AttentionShape(2, 2, 3, 4, 3);
        var options = new AttentionOptions { Causal = true, CausalOffset = 1, Scale = 0.8f };
        int[] padding = [0, 0, 1, 0, /* second sequence: */ 0, 1, 0, 0];
        var nq = shape.Batch * shape.QueryLength * shape.Heads * shape.HeadDim;
        var nk = shape.Batch * shape.KeyLength * shape.Heads * shape.HeadDim;
        var q = Doubles(11, nq);
        var k = Doubles(12, nk);
        var v = Doubles(13, nk);
        var dOut = Doubles(14, nq);
        var rows = shape.Batch * shape.Heads * shape.QueryLength;

        // L = Σ dO ∘ O, so ∂L/∂x is what the backward returns for upstream gradient dO.
        double Loss()
        {
            var o = new double[nq];
            AttentionReference.Forward(o, new double[rows], q, k, v, shape, options, padding);
            return o.Select((x, i) => x * dOut[i]).Sum();
        }
        var dq = new double[nq];
        var dk = new double[nk];
        var dv = new double[nk];
        AttentionReference.Backward(dq, dk, dv, dOut, q, k, v, shape, options, padding);

        const double h = 1e-6;
        foreach (var (x, grad, name) in new[] { (q, dq, "dQ"), (k, dk, "dK"), (v, dv, "dV") })
        {
            for (var i = 0; i < x.Length; i++)
            {
                var saved = x[i];
                x[i] = saved + h;
                var plus = Loss();
                x[i] = saved - h;
                var minus = Loss();
                x[i] = saved;
                var numeric = (plus - minus) / (2 * h);
                Assert.True(Math.Abs(numeric - grad[i]) <= 1e-7 + (1e-6 * Math.Abs(numeric)),
                    $"{name}[{i}]: analytic {grad[i]:g10}, finite difference {numeric:g10}");
            }
        }
        // The masked keys get no gradient through K and V: key 2 of sequence 0 is padding.
        for (var hd = 0; hd < shape.Heads; hd++)
        {
            for (var c = 0; c < shape.HeadDim; c++)
            {
                var index = (((0 * shape.KeyLength) + 2) * shape.Heads * shape.HeadDim) + (hd * shape.HeadDim) + c;
                Assert.Equal(0.0, dk[index]);
                Assert.Equal(0.0, dv[index]);
            }
        }
        Assert.Contains(dk, x => x != 0.0);
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Bad_arguments_throw_before_launch(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<AttentionKernels>();
        var shape = new AttentionShape(2, 2, 5, 6, 8);
        using var q = device.Zeros<float>(2 * 5 * 2 * 8);
        using var kv = device.Zeros<float>(2 * 6 * 2 * 8);
        using var o = device.Zeros<float>(2 * 5 * 2 * 8);
        using var lse = device.Zeros<float>(2 * 2 * 5);
        using var mask = device.Zeros<int>(2 * 6 - 1);
        using var big = device.Zeros<float>(2 * 5 * 2 * 200);

        var error = Assert.Throws<ArgumentException>(() =>
            kernels.Forward(big.View, lse.View, big.View.SubView(0, 400), big.View.SubView(0, 400), big.View.SubView(0, 400), shape with { HeadDim = 129, QueryLength = 1, KeyLength = 1, Batch = 1, Heads = 1 }));
        Assert.Contains("HeadDim 129", error.Message);
        Assert.Contains("maximum 128", error.Message);

        error = Assert.Throws<ArgumentException>(() => kernels.Forward(o.View, lse.View, q.View, q.View, kv.View, shape));
        Assert.Contains("k has 160 elements", error.Message);
        Assert.Contains("[B, T, H, d] = [2, 6, 2, 8]", error.Message);

        error = Assert.Throws<ArgumentException>(() => kernels.Forward(o.View, lse.View, q.View, kv.View, kv.View, shape with { KeyLength = 0 }));
        Assert.Contains("KeyLength must be positive", error.Message);

        error = Assert.Throws<ArgumentException>(() => kernels.Forward(o.View, lse.View, q.View, kv.View, kv.View, shape, new AttentionOptions { KeyPaddingMask = mask.View }));
        Assert.Contains("KeyPaddingMask has 11 elements", error.Message);
        Assert.Contains("[B, Tk] = [2, 6]", error.Message);

        error = Assert.Throws<ArgumentException>(() => kernels.Forward(q.View, lse.View, q.View, kv.View, kv.View, shape));
        Assert.Contains("output and q overlap", error.Message);

        error = Assert.Throws<ArgumentException>(() => kernels.Forward(o.View, lse.View.SubView(0, 19), q.View, kv.View, kv.View, shape));
        Assert.Contains("logSumExp has 19 elements", error.Message);

        // Heads 4 apart while d = 8: two heads would write the same elements.
        error = Assert.Throws<ArgumentException>(() => kernels.Forward(big.View, lse.View, q.View, kv.View, kv.View, shape,
            new AttentionOptions { Output = new AttentionStrides(400, 16, 4) }));
        Assert.Contains("output", error.Message);
        Assert.Contains("same memory", error.Message);

        error = Assert.Throws<ArgumentException>(() => kernels.Backward(q.View, kv.View, kv.View, lse.View, o.View, o.View, lse.View, q.View, kv.View, kv.View, shape));
        Assert.Contains("overlap", error.Message);

        using var probabilities = device.Zeros<float>((2 * 2 * 5 * 6) - 1);
        error = Assert.Throws<ArgumentException>(() => kernels.Probabilities(probabilities.View, q.View, kv.View, shape));
        Assert.Contains("probabilities has 119 elements", error.Message);
    }

    // ---------------------------------------------------------------- helpers

    private static double[] Doubles(int seed, int count) => TestTensors.Random(seed, count).Select(x => (double)x).ToArray();

    internal static int[] Padding(string kind, AttentionShape shape)
    {
        var mask = new int[shape.Batch * shape.KeyLength];
        if (kind == "none")
            return [];
        var random = new Random(shape.KeyLength);
        for (var i = 0; i < mask.Length; i++)
            mask[i] = random.Next(4) == 0 ? 1 : 0;
        if (kind == "last")
            Array.Fill(mask, 1, (shape.Batch - 1) * shape.KeyLength, shape.KeyLength);
        return mask;
    }

    /// <summary>Runs forward, backward and probabilities of <paramref name="c"/> on the device and compares everything with the reference.</summary>
    /// <summary>
    /// The case's options (masks and scale; with <see cref="Case.Fused"/> the fused [B, T, 3E] strides,
    /// T = Tq = Tk) and where Q, K and V start in one input buffer of <c>InputLength</c> floats: either
    /// separate dense tensors one after the other or the interleaved thirds of the fused buffer.
    /// </summary>
    internal static (AttentionOptions Options, int QAt, int KAt, int VAt, int InputLength) Operands(Case c, int[] padding, ArrayView<int> mask)
    {
        var s = c.Shape;
        var e = s.Heads * s.HeadDim;
        var options = new AttentionOptions
        {
            Causal = c.Causal,
            CausalOffset = c.CausalOffset,
            Scale = c.Scale,
            KeyPaddingMask = padding.Length > 0 ? mask.SubView(0, padding.Length) : default,
        };
        int qLength = s.Batch * s.QueryLength * e, kvLength = s.Batch * s.KeyLength * e;
        if (!c.Fused)
            return (options, 0, qLength, qLength + kvLength, qLength + (2 * kvLength));
        var fused = AttentionStrides.Fused(s.QueryLength, s.Heads, s.HeadDim, 3);
        return (options with { Query = fused, Key = fused, Value = fused }, 0, e, 2 * e, 3 * qLength);
    }

    internal static void Check(ComputeDevice device, Case c)
    {
        var kernels = device.Kernels<AttentionKernels>();
        var s = c.Shape;
        var (b, h, tq, tk, d) = (s.Batch, s.Heads, s.QueryLength, s.KeyLength, s.HeadDim);
        var e = h * d;
        var padding = Padding(c.Padding, s);
        using var mask = device.Upload(padding);
        var (options, qAt, kAt, vAt, inputLength) = Operands(c, padding, mask.View);
        var qLength = b * tq * e;
        var input = TestTensors.Random(s.GetHashCode(), inputLength);
        var dOutput = TestTensors.Random(s.GetHashCode() + 1, qLength);
        using var dInput = device.Upload(input);
        using var dGradOut = device.Upload(dOutput);
        ArrayView<float> inputView = dInput.View;
        var qView = inputView.SubView(qAt);
        var kView = inputView.SubView(kAt);
        var vView = inputView.SubView(vAt);

        // Forward.
        var rows = b * h * tq;
        var expectedO = Filled(qLength, Untouched);
        var expectedLse = Filled(rows, Untouched);
        AttentionReference.Forward(expectedO, expectedLse, input.AsSpan(qAt), input.AsSpan(kAt), input.AsSpan(vAt), s, options, padding);
        using var o = device.Upload(Filled(qLength, Untouched));
        using var lse = device.Upload(Filled(rows, Untouched));
        kernels.Forward(o.View, lse.View, qView, kView, vView, s, options);
        var actualO = device.Download(o);
        TestTensors.AssertClose(expectedO, actualO, Atol, Rtol, $"{c}: O");
        TestTensors.AssertClose(expectedLse, device.Download(lse), Atol, Rtol, $"{c}: log-sum-exp (−∞ for rows without keys)");
        AssertMaskedRowsAreZero(c, padding, actualO, device.Download(lse));

        // Backward: gradients land in one dQKV buffer laid out like the input (fused: interleaved thirds).
        var expectedGrad = Filled(inputLength, Untouched);
        AttentionReference.Backward(expectedGrad.AsSpan(qAt), expectedGrad.AsSpan(kAt), expectedGrad.AsSpan(vAt), dOutput, input.AsSpan(qAt), input.AsSpan(kAt), input.AsSpan(vAt), s, options, padding);
        using var grad = device.Upload(Filled(inputLength, Untouched));
        using var rowDot = device.Zeros<float>(rows);
        ArrayView<float> gradView = grad.View;
        kernels.Backward(gradView.SubView(qAt), gradView.SubView(kAt), gradView.SubView(vAt), rowDot.View, dGradOut.View, o.View, lse.View, qView, kView, vView, s, options);
        var actualGrad = device.Download(grad);
        TestTensors.AssertClose(expectedGrad, actualGrad, Atol, Rtol, $"{c}: dQ, dK, dV");

        // Probabilities.
        var pCount = b * h * tq * tk;
        var expectedP = new float[pCount];
        AttentionReference.Probabilities(expectedP, input.AsSpan(qAt), input.AsSpan(kAt), s, options, padding);
        using var p = device.Upload(Filled(pCount, Untouched));
        kernels.Probabilities(p.View, qView, kView, s, options);
        TestTensors.AssertClose(expectedP, device.Download(p), ProbabilityAtol, Rtol, $"{c}: probabilities");
    }

    /// <summary>Rows whose keys are all masked must be exact zeros with log-sum-exp −∞ (PyTorch would give NaN).</summary>
    private static void AssertMaskedRowsAreZero(Case c, int[] padding, float[] output, float[] lse)
    {
        var s = c.Shape;
        var options = new AttentionOptions { Causal = c.Causal, CausalOffset = c.CausalOffset };
        for (var b = 0; b < s.Batch; b++)
        {
            for (var i = 0; i < s.QueryLength; i++)
            {
                var anyKey = Enumerable.Range(0, s.KeyLength).Any(j => !AttentionReference.IsMasked(b, i, j, s, options, padding));
                if (anyKey)
                    continue;
                for (var hd = 0; hd < s.Heads; hd++)
                {
                    Assert.Equal(float.NegativeInfinity, lse[(((b * s.Heads) + hd) * s.QueryLength) + i]);
                    var row = ((((b * s.QueryLength) + i) * s.Heads) + hd) * s.HeadDim;
                    Assert.All(output.AsSpan(row, s.HeadDim).ToArray(), x => Assert.Equal(0f, x));
                }
            }
        }
    }

    internal static float[] Filled(int count, float value)
    {
        var values = new float[count];
        Array.Fill(values, value);
        return values;
    }
}
