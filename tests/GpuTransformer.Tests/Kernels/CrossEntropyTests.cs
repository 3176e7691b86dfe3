namespace GpuTransformer.Tests.Kernels;

[Collection(DeviceCollection.Name)]
public sealed class CrossEntropyTests(Devices devices)
{
    // Losses are O(log V) from a float log-sum-exp; gradients are probabilities scaled by gradScale.
    private const double LossAtol = 2e-6, LossRtol = 2e-6;
    private const double GradientAtol = 1e-7, GradientRtol = 1e-5;

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Forward_backward_and_fused_match_reference_with_ignored_rows(string backend)
    {
        var device = devices.Get(backend);
        foreach (var vocabulary in new[] { 1, 7, 63, 64, 300 })
        {
            foreach (var rows in new[] { 1, 7, 33 })
            {
                var targets = Targets(rows, vocabulary, ignoreIndex: CrossEntropyOptions.DefaultIgnoreIndex);
                Check(device, targets, rows, vocabulary, CrossEntropyOptions.Default, $"{backend} [{rows}, {vocabulary}]");
            }
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Label_smoothing_and_a_custom_ignore_index_match_reference(string backend)
    {
        var device = devices.Get(backend);
        var options = new CrossEntropyOptions { LabelSmoothing = 0.1f, IgnoreIndex = 2 };
        foreach (var (rows, vocabulary) in new[] { (7, 63), (33, 300) })
        {
            var targets = Targets(rows, vocabulary, ignoreIndex: 2);
            Assert.Contains(2, targets);
            Check(device, targets, rows, vocabulary, options, $"{backend} ε=0.1 [{rows}, {vocabulary}]");
        }
    }

    /// <summary>
    /// The GPU row kernel (<see cref="RowTile.Vector256"/>: 256 threads streaming the row in
    /// 128-bit loads when rows are aligned) against the reference: aligned and unaligned
    /// vocabularies, one over 4096, label smoothing and ignored rows.
    /// </summary>
    [Fact]
    public void Vector256_rows_match_reference_aligned_and_unaligned_with_smoothing()
    {
        var device = devices.WithGroupsOf(256, t => t with { RowTile = RowTile.Vector256 });
        Assert.SkipWhen(device is null, $"no backend here runs 256-thread groups (PoCL: {Devices.WhyMissing("opencl")})");
        foreach (var vocabulary in new[] { 1, 7, 300, 1001, 5003 })
        {
            var targets = Targets(9, vocabulary, ignoreIndex: CrossEntropyOptions.DefaultIgnoreIndex);
            Check(device, targets, 9, vocabulary, CrossEntropyOptions.Default, $"vector256 [9, {vocabulary}]");
            var smoothing = new CrossEntropyOptions { LabelSmoothing = 0.1f, IgnoreIndex = 2 };
            Check(device, Targets(9, vocabulary, ignoreIndex: 2), 9, vocabulary, smoothing, $"vector256 ε=0.1 [9, {vocabulary}]");
        }
    }

    /// <summary>
    /// PoCL's row kernel (<see cref="RowTile.CpuLanes"/>: 8 lanes at a time, a polynomial e^x),
    /// forced on every backend so that the simulator checks it where PoCL is missing: vocabularies
    /// below, at and past multiples of 8 and a long one, label smoothing and ignored rows,
    /// forward, backward and fused in place.
    /// </summary>
    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void CpuLanes_rows_match_reference_with_smoothing_and_ignored_rows(string backend)
    {
        var device = devices.Get(backend, devices.Get(backend).Tuning with { RowTile = RowTile.CpuLanes });
        foreach (var vocabulary in new[] { 1, 7, 8, 9, 300, 5003 })
        {
            var targets = Targets(5, vocabulary, ignoreIndex: CrossEntropyOptions.DefaultIgnoreIndex);
            Check(device, targets, 5, vocabulary, CrossEntropyOptions.Default, $"{backend} lanes [5, {vocabulary}]");
            var smoothing = new CrossEntropyOptions { LabelSmoothing = 0.1f, IgnoreIndex = 2 };
            Check(device, Targets(5, vocabulary, ignoreIndex: 2), 5, vocabulary, smoothing, $"{backend} lanes ε=0.1 [5, {vocabulary}]");
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Out_of_range_target_gives_NaN_for_that_row_only(string backend)
    {
        var device = devices.Get(backend);
        var crossEntropy = device.Kernels<CrossEntropyKernels>();
        const int rows = 3, vocabulary = 10;
        var logits = TestTensors.Random(1, rows * vocabulary, scale: 3f);
        int[] targets = [4, vocabulary, 0];
        using var dLogits = device.Upload(logits);
        using var dTargets = device.Upload(targets);
        using var losses = device.Zeros<float>(rows);
        using var mean = device.Zeros<float>(1);

        crossEntropy.ForwardBackward(losses.View, dLogits.View, dLogits.View, dTargets.View, rows, vocabulary, 0.5f);
        crossEntropy.MeanLoss(mean.View, losses.View, dTargets.View, rows);
        var loss = device.Download(losses, rows);
        var gradient = device.Download(dLogits, rows * vocabulary);
        Assert.True(float.IsNaN(loss[1]));
        Assert.All(gradient.AsSpan(vocabulary, vocabulary).ToArray(), g => Assert.True(float.IsNaN(g)));
        Assert.True(float.IsFinite(loss[0]) && float.IsFinite(loss[2]));
        Assert.All(gradient.AsSpan(2 * vocabulary).ToArray(), g => Assert.True(float.IsFinite(g)));
        Assert.True(float.IsNaN(device.Download(mean, 1)[0]));
        var (expected, _) = CrossEntropyReference.Forward(logits, targets, rows, vocabulary);
        TestTensors.AssertClose(expected, loss, LossAtol, LossRtol, $"{backend} losses");
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Mean_loss_counts_only_rows_that_are_not_ignored(string backend)
    {
        var device = devices.Get(backend);
        var crossEntropy = device.Kernels<CrossEntropyKernels>();
        var options = new CrossEntropyOptions { IgnoreIndex = 3 };
        var random = TestTensors.RandomInts(7, 50, 6).Select(t => t - 1).ToArray(); // −1 … 4: −1 and 3 are ignored
        foreach (var targets in new[] { random, [-100, 3, -1] })
        {
            var rows = targets.Length;
            var losses = TestTensors.Random(rows, rows, scale: 4f);
            using var dLosses = device.Upload(losses);
            using var dTargets = device.Upload(targets);
            using var mean = device.Zeros<float>(1);
            crossEntropy.MeanLoss(mean.View, dLosses.View, dTargets.View, rows, options);
            var expected = CrossEntropyReference.Mean(losses, targets, options);
            Assert.Equal(rows == 3, float.IsNaN(expected)); // nothing counted: NaN, as PyTorch
            TestTensors.AssertClose([expected], device.Download(mean, 1), 1e-6, 1e-6, $"{backend} mean of {rows}");
        }
    }

    [Fact]
    public void Reference_backward_matches_finite_differences()
    {
        const int rows = 4, vocabulary = 6;
        var options = new CrossEntropyOptions { LabelSmoothing = 0.1f };
        int[] targets = [2, -100, 5, 0];
        const double gradScale = 1.0 / 3;
        var logits = FiniteDifferences.Random(1, rows * vocabulary, 3);
        var numeric = FiniteDifferences.Gradient(
            z => gradScale * CrossEntropyReference.Forward(z, targets, rows, vocabulary, options).Losses.Sum(), logits);
        var analytic = CrossEntropyReference.Backward(logits, targets, rows, vocabulary, gradScale, options);
        FiniteDifferences.AssertClose(numeric, analytic, 1e-8, 1e-6, "cross-entropy backward");
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Bad_arguments_throw_before_launch(string backend)
    {
        var device = devices.Get(backend);
        var crossEntropy = device.Kernels<CrossEntropyKernels>();
        const int rows = 4, vocabulary = 5;
        using var logits = device.Zeros<float>(rows * vocabulary);
        using var other = device.Zeros<float>(rows * vocabulary);
        using var losses = device.Zeros<float>(rows);
        using var targets = device.Zeros<int>(rows);

        crossEntropy.ForwardBackward(losses.View, logits.View, logits.View, targets.View, rows, vocabulary, 1f); // valid
        Assert.Throws<ArgumentException>(() => crossEntropy.Forward(losses.View, logits.View, targets.View, 0, vocabulary));
        Assert.Throws<ArgumentException>(() => crossEntropy.Forward(losses.View, logits.View, targets.View, rows, 0));
        var error = Assert.Throws<ArgumentException>(() => crossEntropy.Forward(losses.View, logits.View, targets.View, rows, vocabulary + 1));
        Assert.Contains("logits has 20 elements but shape [4, 6] needs 24", error.Message);
        Assert.Throws<ArgumentException>(() => crossEntropy.Forward(losses.View, logits.View, targets.View, rows + 1, 4));
        Assert.Throws<ArgumentException>(() => crossEntropy.Forward(logits.View.SubView(0, rows), logits.View, targets.View, rows, vocabulary));
        Assert.Throws<ArgumentException>(() => crossEntropy.Forward(losses.View, losses.View, logits.View, targets.View, rows, vocabulary));
        Assert.Throws<ArgumentException>(() => crossEntropy.Forward(losses.View, logits.View, targets.View, rows, vocabulary, new() { LabelSmoothing = 1f }));
        Assert.Throws<ArgumentException>(() => crossEntropy.Forward(losses.View, logits.View, targets.View, rows, vocabulary, new() { LabelSmoothing = -0.1f }));
        Assert.Throws<ArgumentException>(() => crossEntropy.Backward(other.View, logits.View, targets.View, rows, vocabulary, float.NaN));
        Assert.Throws<ArgumentException>(() => crossEntropy.Backward(other.View.SubView(0, 10), logits.View, targets.View, rows, vocabulary, 1f));
        error = Assert.Throws<ArgumentException>(() => crossEntropy.Backward(logits.View.SubView(1, 19), logits.View, targets.View, rows - 1, vocabulary, 1f));
        Assert.Contains("partially overlap", error.Message);
        Assert.Throws<ArgumentException>(() => crossEntropy.ForwardBackward(logits.View.SubView(0, rows), other.View, logits.View, targets.View, rows, vocabulary, 1f));
        Assert.Throws<ArgumentException>(() => crossEntropy.MeanLoss(losses.View.SubView(0, 1), losses.View, targets.View, rows));
        Assert.Throws<ArgumentException>(() => crossEntropy.MeanLoss(other.View, losses.View, targets.View, rows + 1));
    }

    // Random targets with some rows ignored: −100 (PyTorch's default), another negative id, and the ignore index.
    internal static int[] Targets(int rows, int vocabulary, int ignoreIndex)
    {
        var targets = TestTensors.RandomInts(rows * vocabulary, rows, vocabulary);
        for (var r = 1; r < rows; r += 3)
            targets[r] = r % 2 == 0 ? ignoreIndex : -7;
        return targets;
    }

    /// <summary>
    /// Forward (with log-sum-exp), Backward into a separate buffer, and the fused launch in place,
    /// against the reference, with the tolerances set for rows of ≤ 300 logits times <paramref name="toleranceScale"/>.
    /// </summary>
    internal static void Check(ComputeDevice device, int[] targets, int rows, int vocabulary, CrossEntropyOptions options, string what, double toleranceScale = 1)
    {
        var (lossAtol, lossRtol) = (LossAtol * toleranceScale, LossRtol * toleranceScale);
        var (gradientAtol, gradientRtol) = (GradientAtol * toleranceScale, GradientRtol * toleranceScale);
        var crossEntropy = device.Kernels<CrossEntropyKernels>();
        var logits = TestTensors.Random(rows + vocabulary, rows * vocabulary, scale: 6f);
        var counted = targets.Count(t => !CrossEntropyReference.IsIgnored(t, options));
        var gradScale = 1f / Math.Max(1, counted);
        var (expectedLosses, expectedLse) = CrossEntropyReference.Forward(logits, targets, rows, vocabulary, options);
        var expectedGradient = CrossEntropyReference.Backward(logits, targets, rows, vocabulary, gradScale, options);

        using var dLogitsBuffer = device.Upload(logits);
        using var dTargets = device.Upload(targets);
        using var losses = device.Zeros<float>(rows);
        using var lse = device.Zeros<float>(rows);
        using var gradient = device.Zeros<float>(rows * vocabulary);

        crossEntropy.Forward(losses.View, lse.View, dLogitsBuffer.View, dTargets.View, rows, vocabulary, options);
        TestTensors.AssertClose(expectedLosses, device.Download(losses, rows), lossAtol, lossRtol, $"{what} losses");
        TestTensors.AssertClose(expectedLse, device.Download(lse, rows), lossAtol, lossRtol, $"{what} log-sum-exp (0 when ignored)");

        crossEntropy.Backward(gradient.View, dLogitsBuffer.View, dTargets.View, rows, vocabulary, gradScale, options);
        TestTensors.AssertClose(expectedGradient, device.Download(gradient, rows * vocabulary), gradientAtol, gradientRtol, $"{what} backward");

        losses.MemSetToZero(device.Stream);
        crossEntropy.ForwardBackward(losses.View, dLogitsBuffer.View, dLogitsBuffer.View, dTargets.View, rows, vocabulary, gradScale, options);
        TestTensors.AssertClose(expectedLosses, device.Download(losses, rows), lossAtol, lossRtol, $"{what} fused losses");
        TestTensors.AssertClose(expectedGradient, device.Download(dLogitsBuffer, rows * vocabulary), gradientAtol, gradientRtol, $"{what} fused in place");
    }
}
