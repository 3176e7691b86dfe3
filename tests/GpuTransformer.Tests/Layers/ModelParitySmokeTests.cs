using GpuTransformer.Kernels.Backends;
using GpuTransformer.Kernels.IO;
using GpuTransformer.Layers;
using GpuTransformer.Tests.Golden;
using GpuTransformer.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace GpuTransformer.Tests.Layers;

/// <summary>
/// One forward, loss and backward of each model against PyTorch's float64 goldens
/// (tests/golden/parity): weights loaded with <see cref="StateDict"/>, logits, loss and every
/// parameter gradient compared. The full parity suite (every case, every backend, AdamW steps)
/// belongs to the parity tests; this checks the models match before that. Tolerances: float32
/// against float64 — logits atol 2e-5 + rtol 1e-4, loss 1e-5 relative, gradients atol 2e-5 +
/// rtol 1e-3 (PyTorch's own float32 run is ~1e-6 away, see the goldens' metadata).
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class ModelParitySmokeTests(Devices devices, ITestOutputHelper output)
{
    [Theory]
    [InlineData("lm_pre_relu_padded_tied")]
    [InlineData("lm_post_gelu_padded")]
    [InlineData("transformer_pre_relu_padded_shared")]
    [InlineData("transformer_post_gelu_padded")]
    public void One_step_matches_PyTorch_on_the_simulator(string name)
    {
        var file = ParitySpec.Load(name);
        var device = devices.Get("cpu");
        var worst = Run(device, file);
        output.WriteLine($"{name}: {worst}");
    }

    /// <summary>Loads the case, runs one step and asserts; returns the worst deviations.</summary>
    internal static string Run(ComputeDevice device, SafeTensorFile file)
    {
        var kind = StateDict.ModelKind(file);
        float[] logits;
        float loss;
        Module model;
        if (kind == StateDict.LanguageModelKind)
        {
            var config = StateDict.ReadLanguageModelConfig(file);
            var lm = new LanguageModel(device, config);
            model = lm;
            StateDict.Load(lm, file, new StateDictLoadOptions { IgnoreExtraTensors = true });
            var ids = Ids(file, "ids");
            var targets = Ids(file, "targets");
            lm.ZeroGradients();
            logits = lm.Forward(ids).ToArray();
            loss = lm.Loss(targets);
            lm.Backward(lm.LossFunction.Backward());
        }
        else
        {
            var config = StateDict.ReadTransformerConfig(file);
            var transformer = new Transformer(device, config);
            model = transformer;
            StateDict.Load(transformer, file, new StateDictLoadOptions { IgnoreExtraTensors = true });
            var source = Ids(file, "src");
            var targetInput = Ids(file, "tgt_in");
            var targetOutput = Ids(file, "tgt_out");
            transformer.ZeroGradients();
            logits = transformer.Forward(source, targetInput).ToArray();
            loss = transformer.Loss(targetOutput);
            transformer.Backward(transformer.LossFunction.Backward());
        }
        using (model)
        {
            var expectedLogits = file.Floats("logits");
            TestTensors.AssertClose(expectedLogits, logits, 2e-5, 1e-4, "logits");
            var expectedLoss = (float)file.Scalar("loss");
            Assert.True(Math.Abs(loss - expectedLoss) <= 1e-5 * Math.Abs(expectedLoss), $"loss {loss:g9} vs {expectedLoss:g9}");
            var worstGradient = 0.0;
            foreach (var parameter in model.Parameters())
            {
                var expected = file.Floats("grad." + parameter.Name);
                var actual = parameter.Gradient.ToArray();
                TestTensors.AssertClose(expected, actual, 2e-5, 1e-3, "grad." + parameter.Name);
                worstGradient = Math.Max(worstGradient, TestTensors.MaxAbsDifference(expected, actual));
            }
            return $"max |Δlogits| {TestTensors.MaxAbsDifference(expectedLogits, logits):g3}, |Δloss| {Math.Abs(loss - expectedLoss):g3}, max |Δgrad| {worstGradient:g3}";
        }
    }

    private static TokenIds Ids(SafeTensorFile file, string name)
    {
        var tensor = file.Get(name);
        return new TokenIds(tensor.ToInts(), tensor.Shape[0], tensor.Shape[1]);
    }
}
