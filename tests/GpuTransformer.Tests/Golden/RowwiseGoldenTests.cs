namespace GpuTransformer.Tests.Golden;

/// <summary>
/// Softmax, LayerNorm and cross-entropy kernels against PyTorch (float64 results stored as
/// F32, tests/golden/kernels) on every backend. Tolerances are the float32 rounding of
/// a short reduction: 2e-6 absolute + 1e-5 relative for probabilities and losses, 1e-5 +
/// 1e-4 for gradients and normalised outputs.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class RowwiseGoldenTests(Devices devices)
{
    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Softmax_matches_PyTorch(string backend)
    {
        var device = devices.Get(backend);
        var softmax = device.Kernels<SoftmaxKernels>();
        foreach (var (name, causal) in new[] { ("softmax", false), ("softmax_causal", true) })
        {
            var file = GoldenFilesTests.Load(name);
            var shape = file.Get("x").Shape;
            var columns = shape[^1];
            var rows = file.Get("x").ToFloats().Length / columns;
            var options = causal ? SoftmaxOptions.CausalMask(queryLength: shape[^2]) : null;
            using var x = device.Upload(file.Floats("x"));
            using var dy = device.Upload(file.Floats("dy"));
            using var y = device.Zeros<float>(rows * columns);
            using var dx = device.Zeros<float>(rows * columns);

            softmax.Forward(y.View, x.View, rows, columns, options);
            TestTensors.AssertClose(file.Floats("y"), device.Download(y), 2e-6, 1e-5, $"{name} y");
            softmax.Backward(dx.View, y.View, dy.View, rows, columns, options);
            TestTensors.AssertClose(file.Floats("dx"), device.Download(dx), 1e-5, 1e-4, $"{name} dx");
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void LayerNorm_matches_PyTorch(string backend)
    {
        var device = devices.Get(backend);
        var layerNorm = device.Kernels<LayerNormKernels>();
        var file = GoldenFilesTests.Load("layernorm");
        var shape = file.Get("x").Shape;
        var (rows, columns) = (shape[0], shape[1]);
        using var x = device.Upload(file.Floats("x"));
        using var gamma = device.Upload(file.Floats("gamma"));
        using var beta = device.Upload(file.Floats("beta"));
        using var dy = device.Upload(file.Floats("dy"));
        using var y = device.Zeros<float>(rows * columns);
        using var mean = device.Zeros<float>(rows);
        using var rstd = device.Zeros<float>(rows);
        using var dx = device.Zeros<float>(rows * columns);
        using var dGamma = device.Zeros<float>(columns);
        using var dBeta = device.Zeros<float>(columns);
        using var scratch = device.Zeros<float>(LayerNormKernels.BackwardScratchLength(rows, columns));

        layerNorm.Forward(y.View, mean.View, rstd.View, x.View, gamma.View, beta.View, rows, columns, eps: 1e-5f);
        TestTensors.AssertClose(file.Floats("y"), device.Download(y), 1e-5, 1e-4, "layernorm y");
        TestTensors.AssertClose(file.Floats("mean"), device.Download(mean), 1e-5, 1e-6, "layernorm mean");
        TestTensors.AssertClose(file.Floats("rstd"), device.Download(rstd), 1e-5, 1e-5, "layernorm rstd");

        layerNorm.Backward(dx.View, dGamma.View, dBeta.View, scratch.View, dy.View, x.View, gamma.View, mean.View, rstd.View, rows, columns);
        TestTensors.AssertClose(file.Floats("dx"), device.Download(dx), 1e-5, 1e-4, "layernorm dx");
        TestTensors.AssertClose(file.Floats("dgamma"), device.Download(dGamma), 1e-5, 1e-4, "layernorm dgamma");
        TestTensors.AssertClose(file.Floats("dbeta"), device.Download(dBeta), 1e-5, 1e-4, "layernorm dbeta");
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void CrossEntropy_matches_PyTorch(string backend)
    {
        var device = devices.Get(backend);
        var crossEntropy = device.Kernels<CrossEntropyKernels>();
        foreach (var (name, smoothing) in new[] { ("cross_entropy", 0f), ("cross_entropy_smoothing", 0.1f) })
        {
            var file = GoldenFilesTests.Load(name);
            var shape = file.Get("logits").Shape;
            var (rows, vocabulary) = (shape[0], shape[1]);
            var targets = file.Ints("targets");
            var counted = targets.Count(t => t != CrossEntropyOptions.DefaultIgnoreIndex);
            var options = new CrossEntropyOptions { LabelSmoothing = smoothing };
            using var logits = device.Upload(file.Floats("logits"));
            using var dTargets = device.Upload(targets);
            using var losses = device.Zeros<float>(rows);
            using var mean = device.Zeros<float>(1);
            using var dLogits = device.Zeros<float>(rows * vocabulary);

            crossEntropy.Forward(losses.View, logits.View, dTargets.View, rows, vocabulary, options);
            TestTensors.AssertClose(file.Floats("losses"), device.Download(losses), 2e-6, 1e-5, $"{name} losses");
            crossEntropy.MeanLoss(mean.View, losses.View, dTargets.View, rows, options);
            TestTensors.AssertClose([(float)file.Scalar("loss")], device.Download(mean), 2e-6, 1e-5, $"{name} mean loss");
            crossEntropy.Backward(dLogits.View, logits.View, dTargets.View, rows, vocabulary, 1f / counted, options);
            TestTensors.AssertClose(file.Floats("dlogits"), device.Download(dLogits), 1e-7, 1e-5, $"{name} dlogits");

            // Fused, in place over the logits, as the language model's loss runs it.
            crossEntropy.ForwardBackward(losses.View, logits.View, logits.View, dTargets.View, rows, vocabulary, 1f / counted, options);
            TestTensors.AssertClose(file.Floats("dlogits"), device.Download(logits), 1e-7, 1e-5, $"{name} fused in-place dlogits");
            TestTensors.AssertClose(file.Floats("losses"), device.Download(losses), 2e-6, 1e-5, $"{name} fused losses");
        }
    }
}
