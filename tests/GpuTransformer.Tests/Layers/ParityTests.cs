using GpuTransformer.Training.Parity;

namespace GpuTransformer.Tests.Layers;

/// <summary>
/// Both models against PyTorch, case by case (tests/golden/parity: post-LN and pre-LN; relu, gelu
/// and gelu_tanh; padded and unpadded batches; shared and tied embeddings; float64 references
/// made by scripts/parity/make_parity_golden.py). The weights load through the checkpoint
/// loader (<see cref="ModelParity.Load"/>), dropout is off.
/// <para>
/// Tolerances, for a tensor with reference values b and ours a (<see cref="ParityTolerance"/>):
/// logits and every parameter gradient <c>max|a − b| ≤ 1e-4 · max|b| + 1e-8</c> over the tensor
/// (relative to the tensor's largest reference value, so entries that are 0 in exact arithmetic,
/// like the key rows of an in_proj_bias gradient, ~1e-17 in the goldens, may carry float32
/// round-off; the 1e-8 floor only matters for a tensor that is exactly 0 — the smallest
/// gradient tensor in the goldens reaches 5.7e-4, where 1e-4 relative is 5.7e-8); the loss
/// <c>|a − b| ≤ 1e-5 · |b|</c>; the losses of 10 AdamW steps (hyper-parameters from the golden's
/// metadata) <c>|a_k − b_k| ≤ 1e-4 · |b_k|</c> for every step k. PyTorch's own float32 run is within
/// ~3e-6 of every reference (the goldens' torch_float32_deviation).
/// </para>
/// <para>
/// Backends: every case, one step and 10 steps, on PoCL (OpenCL, fast: ~0.1 s per case once
/// the kernels are built) and on CUDA where present. The CPU simulator (every simulated thread
/// an OS thread: 1–4 s per step here) runs the one-step check on every case, since its kernel
/// instantiations (tiles, group sizes) differ from PoCL's and one step is cheap, but the 10
/// steps only on <see cref="SimulatorTrainingCases"/> (lm_pre_relu_padded_tied: padded keys,
/// the tied table updated once from two gradient contributions, pre-LN; ~16 s): the optimizer
/// kernels are the same for both models, and a transformer's 10 steps cost ~50 s there.
/// </para>
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class ParityTests(Devices devices, ITestOutputHelper output)
{
    /// <summary>Cases that also run 10 AdamW steps on the simulator (the rest run them on PoCL/CUDA).</summary>
    public static readonly IReadOnlyList<string> SimulatorTrainingCases = ["lm_pre_relu_padded_tied"];

    private const int Steps = 10;

    /// <summary>Every backend × every case.</summary>
    public static TheoryData<string, string> OneStepCases => Rows(_ => true);

    /// <summary>PoCL/CUDA × every case; the simulator × <see cref="SimulatorTrainingCases"/>.</summary>
    public static TheoryData<string, string> TrainingCases => Rows(row => row.Backend != "cpu" || SimulatorTrainingCases.Contains(row.Case));

    [Theory]
    [MemberData(nameof(OneStepCases))]
    public void Logits_loss_and_every_gradient_match_PyTorch(string backend, string name) =>
        output.WriteLine(ParityChecks.AssertOneStep(devices.Get(backend), name));

    [Theory]
    [MemberData(nameof(TrainingCases))]
    public void Ten_AdamW_steps_match_PyTorch_losses(string backend, string name) =>
        output.WriteLine(ParityChecks.AssertTenSteps(devices.Get(backend), name, Steps));

    private static TheoryData<string, string> Rows(Func<(string Backend, string Case), bool> include)
    {
        var data = new TheoryData<string, string>();
        foreach (var backend in Devices.Available)
        {
            foreach (var name in ParitySpec.Cases())
            {
                if (include((backend, name)))
                    data.Add(backend, name);
            }
        }
        return data;
    }
}

/// <summary>The golden checks shared by <see cref="ParityTests"/> and the CLI tests.</summary>
internal static class ParityChecks
{
    /// <summary>
    /// Loads the case into its model on <paramref name="device"/>, runs one forward, loss and
    /// backward, and asserts logits, loss and every gradient within <see cref="ParityTolerance.Default"/>.
    /// Returns a line with the worst differences.
    /// </summary>
    public static string AssertOneStep(ComputeDevice device, string name)
    {
        var file = ParitySpec.Load(name);
        using var model = ModelParity.Load(device, file);
        var result = ModelParity.Run(model, ParityBatch.From(file, model.Config.Kind));
        var comparisons = ParityComparison.Compare(result, file);
        Assert.Equal(model.Parameters().Count() + 2, comparisons.Count);
        var outside = comparisons.Where(c => !c.Within).ToList();
        Assert.True(outside.Count == 0, $"{name} on {device.Backend}: {outside.Count} tensors outside tolerance: " +
            string.Join("; ", outside.Take(6).Select(Describe)));
        var gradients = comparisons.Where(c => c.Name.StartsWith(ParityResult.GradientPrefix, StringComparison.Ordinal)).ToList();
        var worst = gradients.MaxBy(c => c.RelativeDifference)!;
        return string.Create(CultureInfo.InvariantCulture,
            $"{name} on {device.Backend}: logits rel {comparisons[0].RelativeDifference:0.00e+0}, loss rel {comparisons[1].RelativeDifference:0.00e+0}, " +
            $"worst gradient rel {worst.RelativeDifference:0.00e+0} ({worst.Name}), max |Δgrad| {gradients.Max(c => c.MaxAbsDifference):0.00e+0}");
    }

    /// <summary>Runs <paramref name="steps"/> AdamW steps on the case's batch and asserts each loss within 1e-4 relative.</summary>
    public static string AssertTenSteps(ComputeDevice device, string name, int steps)
    {
        var file = ParitySpec.Load(name);
        var expected = file.Floats("losses");
        Assert.Equal(steps, expected.Length);
        using var model = ModelParity.Load(device, file);
        var (options, learningRate) = ModelParity.OptimizerSettings(file);
        var actual = ModelParity.Train(model, ParityBatch.From(file, model.Config.Kind), options, learningRate, steps);
        TestTensors.AssertClose(expected, actual, 0, 1e-4, $"{name} on {device.Backend}: losses of {steps} AdamW steps");
        var worst = Enumerable.Range(0, steps).Max(k => Math.Abs((double)actual[k] - expected[k]) / Math.Abs(expected[k]));
        return string.Create(CultureInfo.InvariantCulture,
            $"{name} on {device.Backend}: losses {actual[0]:F4} → {actual[^1]:F4}, worst step rel {worst:0.00e+0}");
    }

    private static string Describe(TensorComparison c) => string.Create(CultureInfo.InvariantCulture,
        $"{c.Name} max|Δ| {c.MaxAbsDifference:0.00e+0} > allowed {c.Allowed:0.00e+0} (max|ref| {c.MaxAbsReference:0.00e+0})");
}
