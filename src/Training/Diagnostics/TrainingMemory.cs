using System.Diagnostics;
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Layers;
using GpuTransformer.Training.Optimization;

namespace GpuTransformer.Training.Diagnostics;

/// <summary>
/// Device bytes held while a model trains, measured with <see cref="DeviceAllocations"/> (the
/// accelerator's live buffers) after full AdamW steps, when every buffer of the step exists (no
/// step allocates after the first with a given shape), and split by owner.
/// </summary>
/// <param name="Parameters">Weights: 4 bytes per parameter.</param>
/// <param name="Gradients">Their gradients (allocated with the weights).</param>
/// <param name="Activations">The model's activation buffers: <see cref="Module.DeviceBytes"/> minus weights and gradients.</param>
/// <param name="Optimizer">What creating the <see cref="AdamWOptimizer"/> allocated (two moments per weight, gradient-norm partials).</param>
/// <param name="Scratch">The rest the step holds: kernel families' scratch and constants (column-sum partials, embedding buckets, positional-encoding rates, …).</param>
/// <param name="GrowthAfterFirstStep">Bytes allocated by steps after the first (0 when buffers are reused).</param>
/// <param name="Estimate">The prediction for the same config and shape.</param>
/// <param name="SecondsPerStep">Wall time of the last step (forward, loss, backward, AdamW), synchronised.</param>
internal sealed record TrainingMemory(
    long Parameters, long Gradients, long Activations, long Optimizer, long Scratch, long GrowthAfterFirstStep,
    MemoryEstimate Estimate, double SecondsPerStep)
{
    /// <summary>Everything the step holds on the device.</summary>
    public long Total => Parameters + Gradients + Activations + Optimizer + Scratch;

    /// <summary>(estimate − measured) / measured for the totals.</summary>
    public double EstimateError => (Estimate.Total - Total) / (double)Total;

    /// <summary>
    /// Creates a model on <paramref name="device"/> (use a fresh device: kernel families keep
    /// scratch sized by their largest use so far), an AdamW optimizer over it, and runs
    /// <paramref name="steps"/> ≥ 2 training steps on <paramref name="batch"/>
    /// (<see cref="IModel.TrainStep"/>, then the update), measuring the device's live buffers
    /// before the model, after the optimizer and after each step.
    /// </summary>
    public static TrainingMemory Measure(ComputeDevice device, Func<IModel> createModel, ModelBatch batch, MemoryEstimate estimate, int steps = 2)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(createModel);
        ArgumentNullException.ThrowIfNull(batch);
        ArgumentNullException.ThrowIfNull(estimate);
        ArgumentOutOfRangeException.ThrowIfLessThan(steps, 2);
        device.Synchronize();
        var before = DeviceAllocations.HeldBytes(device);
        using var model = createModel();
        var withModel = DeviceAllocations.HeldBytes(device);
        using var optimizer = new AdamWOptimizer(model.Parameters());
        var optimizerBytes = DeviceAllocations.HeldBytes(device) - withModel;
        long afterFirst = 0, held = 0;
        var seconds = 0.0;
        for (var step = 0; step < steps; step++)
        {
            var clock = Stopwatch.StartNew();
            model.ZeroGradients();
            model.TrainStep(batch);
            optimizer.Step(1e-4);
            device.Synchronize();
            seconds = clock.Elapsed.TotalSeconds;
            held = DeviceAllocations.HeldBytes(device) - before;
            if (step == 0)
                afterFirst = held;
        }
        var weights = model.ParameterCount() * sizeof(float);
        var moduleBytes = model.DeviceBytes();
        return new TrainingMemory(weights, weights, moduleBytes - (2 * weights), optimizerBytes,
            held - moduleBytes - optimizerBytes, held - afterFirst, estimate, seconds);
    }
}
