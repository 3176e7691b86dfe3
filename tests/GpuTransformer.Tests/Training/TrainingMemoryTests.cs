using GpuTransformer.Training.Diagnostics;

namespace GpuTransformer.Tests.Training;

/// <summary>
/// Device memory of whole training steps, counted from the accelerator's live buffers
/// (<see cref="DeviceAllocations"/>): nothing allocated after the first step, and
/// <see cref="MemoryEstimate"/> within 1 % (or 4 KiB) of what is held (and the pre-training check's
/// <see cref="DeviceMemory.Estimate"/> not below it), for a language model and
/// an encoder–decoder with padding. A fresh device per model (kernel scratch is per device);
/// tiny shapes so the simulator runs them too.
/// </summary>
public sealed class TrainingMemoryTests(ITestOutputHelper output)
{
    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Training_steps_hold_what_the_estimate_predicts_and_allocate_nothing_after_the_first(string backend)
    {
        var lm = new LanguageModelConfig { DModel = 16, NHead = 2, NumLayers = 2, DimFeedforward = 24, VocabularySize = 19, MaxSequenceLength = 9, PadId = 0 };
        var ids = new TokenIds(new[] { 3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 0, 0 }, 2, 8);
        var targets = new TokenIds(new[] { 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 0, 0, 0 }, 2, 8);
        using (var device = ComputeDevice.Create(backend, new DeviceOptions { AllowPortableOpenCL = true }))
        {
            var measured = TrainingMemory.Measure(device, () => new LanguageModel(device, lm), new ModelBatch(ids, targets), MemoryEstimate.For(lm, 2, 8, tuning: device.Tuning));
            Check(measured, "language model");
            // What gt train checks and prints before it allocates (the estimate for this device's tuning and the samples' cache) covers what a step holds.
            var planned = DeviceMemory.Estimate(lm, 2, 8, device.Tuning);
            Assert.True(planned >= measured.Total, $"the pre-training estimate {planned} B is below the {measured.Total} B held");
        }

        var seq2seq = new TransformerConfig { DModel = 16, NHead = 2, NumEncoderLayers = 1, NumDecoderLayers = 2, DimFeedforward = 24, SourceVocabularySize = 17, TargetVocabularySize = 13, MaxSequenceLength = 9, PadId = 0 };
        var source = new TokenIds(new[] { 3, 1, 4, 1, 5, 9, 2, 0, 0 }, 1, 9);
        var targetInput = new TokenIds(new[] { 1, 7, 3, 0 }, 1, 4);
        var targetOutput = new TokenIds(new[] { 7, 3, 2, 0 }, 1, 4);
        using (var device = ComputeDevice.Create(backend, new DeviceOptions { AllowPortableOpenCL = true }))
        {
            var measured = TrainingMemory.Measure(device, () => new Transformer(device, seq2seq),
                new ModelBatch(targetInput, targetOutput) { Source = source }, MemoryEstimate.For(seq2seq, 1, 9, 4, tuning: device.Tuning), steps: 3);
            Check(measured, "transformer");
        }
    }

    private void Check(TrainingMemory measured, string what)
    {
        output.WriteLine($"{what}: held {measured.Total} B, estimate {measured.Estimate.Total} B, growth after step 1 {measured.GrowthAfterFirstStep} B");
        Assert.Equal(0, measured.GrowthAfterFirstStep);
        Assert.Equal(measured.Parameters, measured.Estimate.Parameters);
        Assert.True(measured.Optimizer >= 2 * measured.Parameters, $"{what}: AdamW holds {measured.Optimizer} B, less than two moments");
        var difference = Math.Abs(measured.Estimate.Total - measured.Total);
        Assert.True(difference <= Math.Max(4096, measured.Total / 100), $"{what}: estimate {measured.Estimate.Total} B vs held {measured.Total} B");
    }
}
