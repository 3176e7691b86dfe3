namespace GpuTransformer.Tests.Kernels;

/// <summary>
/// <see cref="UnfusedAttentionKernels"/> against the C# reference on every case of
/// <see cref="AttentionTests"/> (causal with offsets, rows without keys, padding with a fully
/// padded sequence, cross attention, interleaved qkv/dQKV thirds, a decode step, d 1 … 128, odd T),
/// with the fused kernels' tolerances: O, dQ, dK, dV within 2e-5 + 1e-4·|expected|, P within
/// 2e-6 + 1e-4·|expected|, untouched gaps of strided outputs left as they were.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class UnfusedAttentionTests(Devices devices)
{
    public static TheoryData<string, string> BackendsAndCases() =>
        Devices.BackendsTimes(AttentionTests.Cases.Select(c => c.Name));

    [Theory]
    [MemberData(nameof(BackendsAndCases))]
    public void Forward_probabilities_and_backward_match_reference(string backend, string caseName)
    {
        var device = devices.Get(backend);
        var c = AttentionTests.Cases.Single(c => c.Name == caseName);
        var kernels = device.Kernels<UnfusedAttentionKernels>();
        var s = c.Shape;
        var (b, h, tq, tk, d) = (s.Batch, s.Heads, s.QueryLength, s.KeyLength, s.HeadDim);
        var e = h * d;
        var padding = AttentionTests.Padding(c.Padding, s);
        using var mask = device.Upload(padding.Length > 0 ? padding : [0]);
        // Inputs: separate dense tensors, or the thirds of one [B, T, 3E] buffer (gradients likewise in one dQKV buffer).
        var (options, qAt, kAt, vAt, inputLength) = AttentionTests.Operands(c, padding, mask.View);
        var qLength = b * tq * e;
        var input = TestTensors.Random(s.GetHashCode() + 2, inputLength);
        var dOutput = TestTensors.Random(s.GetHashCode() + 3, qLength);
        using var inputs = device.Upload(input);
        using var dOut = device.Upload(dOutput);
        ArrayView<float> view = inputs.View;
        var (q, k, v) = (view.SubView(qAt), view.SubView(kAt), view.SubView(vAt));
        var scoresLength = UnfusedAttentionKernels.ScoresLength(s);
        Assert.Equal(b * h * tq * tk, scoresLength);

        var expectedO = AttentionTests.Filled(qLength, AttentionTests.Untouched);
        AttentionReference.Forward(expectedO, new float[b * h * tq], input.AsSpan(qAt), input.AsSpan(kAt), input.AsSpan(vAt), s, options, padding);
        var expectedP = new float[scoresLength];
        AttentionReference.Probabilities(expectedP, input.AsSpan(qAt), input.AsSpan(kAt), s, options, padding);
        using var o = device.Upload(AttentionTests.Filled(qLength, AttentionTests.Untouched));
        using var p = device.Upload(AttentionTests.Filled(scoresLength, AttentionTests.Untouched));
        kernels.Forward(o.View, p.View, q, k, v, s, options);
        TestTensors.AssertClose(expectedO, device.Download(o), AttentionTests.Atol, AttentionTests.Rtol, $"{c} unfused: O");
        TestTensors.AssertClose(expectedP, device.Download(p), AttentionTests.ProbabilityAtol, AttentionTests.Rtol, $"{c} unfused: P");

        var expectedGrad = AttentionTests.Filled(inputLength, AttentionTests.Untouched);
        AttentionReference.Backward(expectedGrad.AsSpan(qAt), expectedGrad.AsSpan(kAt), expectedGrad.AsSpan(vAt), dOutput, input.AsSpan(qAt), input.AsSpan(kAt), input.AsSpan(vAt), s, options, padding);
        using var grad = device.Upload(AttentionTests.Filled(inputLength, AttentionTests.Untouched));
        using var dScores = device.Upload(AttentionTests.Filled(scoresLength, AttentionTests.Untouched));
        ArrayView<float> gradView = grad.View;
        kernels.Backward(gradView.SubView(qAt), gradView.SubView(kAt), gradView.SubView(vAt), dScores.View, dOut.View, p.View, q, k, v, s, options);
        TestTensors.AssertClose(expectedGrad, device.Download(grad), AttentionTests.Atol, AttentionTests.Rtol, $"{c} unfused: dQ, dK, dV");
        TestTensors.AssertClose(expectedP, device.Download(p), AttentionTests.ProbabilityAtol, AttentionTests.Rtol, $"{c} unfused: P after the backward (read only)");
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Bad_arguments_throw_before_launch(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<UnfusedAttentionKernels>();
        var shape = new AttentionShape(2, 2, 5, 6, 8);
        using var q = device.Upload(AttentionTests.Filled(2 * 5 * 2 * 8, 1f));
        using var kv = device.Zeros<float>(2 * 6 * 2 * 8);
        using var o = device.Zeros<float>(2 * 5 * 2 * 8);
        using var p = device.Zeros<float>(2 * 2 * 5 * 6);
        using var mask = device.Zeros<int>((2 * 6) - 1);

        var error = Assert.Throws<ArgumentException>(() => kernels.Forward(o.View, p.View.SubView(0, 119), q.View, kv.View, kv.View, shape));
        Assert.Contains("probabilities has 119 elements", error.Message);
        Assert.Contains("[B, H, Tq, Tk] = [2, 2, 5, 6]", error.Message);

        error = Assert.Throws<ArgumentException>(() => kernels.Forward(o.View, p.View, q.View, q.View, kv.View, shape));
        Assert.Contains("k has 160 elements", error.Message);

        error = Assert.Throws<ArgumentException>(() => kernels.Forward(o.View, p.View, q.View, kv.View, kv.View, shape, new AttentionOptions { KeyPaddingMask = mask.View }));
        Assert.Contains("KeyPaddingMask has 11 elements", error.Message);

        error = Assert.Throws<ArgumentException>(() => kernels.Forward(q.View, p.View, q.View, kv.View, kv.View, shape));
        Assert.Contains("output and q overlap", error.Message);

        error = Assert.Throws<ArgumentException>(() => kernels.Backward(o.View, kv.View, kv.View, p.View, o.View, p.View, q.View, kv.View, kv.View, shape));
        Assert.Contains("overlap", error.Message);

        // Nothing was launched: q still holds its ones, the outputs their zeros.
        Assert.All(device.Download(q), x => Assert.Equal(1f, x));
        Assert.All(device.Download(o), x => Assert.Equal(0f, x));
        Assert.All(device.Download(p), x => Assert.Equal(0f, x));
    }
}
