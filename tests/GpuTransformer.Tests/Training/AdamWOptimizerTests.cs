using System.Globalization;
using GpuTransformer.Kernels.IO;
using GpuTransformer.Layers;
using GpuTransformer.Tests.Infrastructure;
using GpuTransformer.Tests.Golden;
using GpuTransformer.Training.Optimization;
using Xunit;

namespace GpuTransformer.Tests.Training;

/// <summary>
/// The optimizer against PyTorch: 10 torch.optim.AdamW steps on a parity case's batch
/// (tests/golden/parity; decay only on ≥2-D non-embedding weights) must give the same 10
/// losses within 1e-4 relative.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class AdamWOptimizerTests(Devices devices)
{
    [Theory]
    [InlineData("lm_post_relu")]
    [InlineData("transformer_post_relu")]
    public void Ten_steps_match_PyTorch_losses(string name)
    {
        var file = ParitySpec.Load(name);
        var device = devices.Get("cpu");
        var options = new AdamWOptions
        {
            Beta1 = Meta(file, "beta1"),
            Beta2 = Meta(file, "beta2"),
            Epsilon = Meta(file, "eps"),
            WeightDecay = Meta(file, "weight_decay"),
        };
        var learningRate = Meta(file, "lr");
        var expected = file.Floats("losses");
        var actual = new float[expected.Length];
        if (StateDict.ModelKind(file) == StateDict.LanguageModelKind)
        {
            using var lm = new LanguageModel(device, StateDict.ReadLanguageModelConfig(file));
            StateDict.Load(lm, file, new StateDictLoadOptions { IgnoreExtraTensors = true });
            using var optimizer = new AdamWOptimizer(lm.Parameters(), options);
            var (ids, targets) = (Ids(file, "ids"), Ids(file, "targets"));
            for (var step = 0; step < actual.Length; step++)
            {
                lm.ZeroGradients();
                lm.Forward(ids);
                actual[step] = lm.Loss(targets);
                lm.Backward(lm.LossFunction.Backward());
                optimizer.Step(learningRate);
            }
            Assert.Equal(actual.Length, optimizer.StepCount);
        }
        else
        {
            using var model = new Transformer(device, StateDict.ReadTransformerConfig(file));
            StateDict.Load(model, file, new StateDictLoadOptions { IgnoreExtraTensors = true });
            using var optimizer = new AdamWOptimizer(model.Parameters(), options);
            var (source, targetInput, targetOutput) = (Ids(file, "src"), Ids(file, "tgt_in"), Ids(file, "tgt_out"));
            for (var step = 0; step < actual.Length; step++)
            {
                model.ZeroGradients();
                model.Forward(source, targetInput);
                actual[step] = model.Loss(targetOutput);
                model.Backward(model.LossFunction.Backward());
                optimizer.Step(learningRate);
            }
        }
        TestTensors.AssertClose(expected, actual, 0, 1e-4, $"{name}: losses of 10 AdamW steps");
    }

    private static double Meta(SafeTensorFile file, string key) =>
        double.Parse(file.Metadata[key], CultureInfo.InvariantCulture);

    private static TokenIds Ids(SafeTensorFile file, string name)
    {
        var tensor = file.Get(name);
        return new TokenIds(tensor.ToInts(), tensor.Shape[0], tensor.Shape[1]);
    }
}
