using System.Globalization;
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Layers;

namespace GpuTransformer.Training;

/// <summary>A training configuration that would not fit in the device's memory (raised before anything is allocated).</summary>
public sealed class InsufficientDeviceMemoryException : InvalidOperationException
{
    /// <inheritdoc/>
    public InsufficientDeviceMemoryException()
    {
    }

    /// <inheritdoc/>
    public InsufficientDeviceMemoryException(string message)
        : base(message)
    {
    }

    /// <inheritdoc/>
    public InsufficientDeviceMemoryException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>Checks a training configuration against a device's memory before allocating it.</summary>
public static class DeviceMemory
{
    /// <summary>Share of the device's memory a run may plan to use (the rest is left to the driver, kernels' private memory and fragmentation).</summary>
    public const double UsableFraction = 0.9;

    /// <summary>Bytes a device offers: its global memory; for the CPU simulator, the memory available to this process.</summary>
    public static long Capacity(DeviceDescription device)
    {
        ArgumentNullException.ThrowIfNull(device);
        return device.Kind == DeviceKind.Simulator || device.MemoryBytes <= 0
            ? GC.GetGCMemoryInfo().TotalAvailableMemoryBytes
            : device.MemoryBytes;
    }

    /// <summary>
    /// The estimate of training <paramref name="config"/> at [<paramref name="batchSize"/>, <paramref name="context"/>]:
    /// parameters, gradients, activations, AdamW's moments and scratch (<see cref="MemoryEstimate"/>), plus
    /// the key/value cache of the samples drawn at the end. <paramref name="tuning"/>: the device's
    /// (<see cref="ComputeDevice.Tuning"/>), which decides whether attention trains unfused at this
    /// context and so holds P and dS [B, heads, T, T] per layer (<see cref="KernelTuning.UnfusedAttentionMaxLength"/>).
    /// </summary>
    public static long Estimate(LanguageModelConfig config, int batchSize, int context, KernelTuning tuning)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(tuning);
        var cache = (long)config.NumLayers * context * 2 * config.DModel * sizeof(float);
        return MemoryEstimate.For(config, batchSize, context, training: true, tuning).Total + cache;
    }

    /// <summary>
    /// Returns the estimate (<see cref="Estimate"/> with <paramref name="tuning"/>, the device's) when it
    /// fits in <see cref="UsableFraction"/> of <paramref name="device"/>'s memory.
    /// </summary>
    /// <exception cref="InsufficientDeviceMemoryException">It does not; the message names the estimate, its parts, the device's memory and what to reduce.</exception>
    public static long RequireFits(LanguageModelConfig config, int batchSize, int context, DeviceDescription device, KernelTuning tuning)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(device);
        var total = Estimate(config, batchSize, context, tuning);
        var capacity = Capacity(device);
        if (total <= UsableFraction * capacity)
            return total;
        var e = MemoryEstimate.For(config, batchSize, context, training: true, tuning);
        throw new InsufficientDeviceMemoryException(
            FormattableString.Invariant($"Training does not fit on {device.BackendName}:{device.IndexInBackend} {device.Name}: d_model {config.DModel}, {config.NumLayers} layers, ") +
            FormattableString.Invariant($"vocabulary {config.VocabularySize:N0} at batch {batchSize} × context {context} needs about {Format(total)} of device memory ") +
            FormattableString.Invariant($"(parameters {Format(e.Parameters)}, gradients {Format(e.Gradients)}, activations {Format(e.Activations)}, AdamW moments {Format(e.OptimizerState)}, scratch {Format(e.Scratch)}), ") +
            FormattableString.Invariant($"but the device has {Format(capacity)} ({UsableFraction:P0} usable). ") +
            "Reduce --batch-size or --context (keep the tokens per step with --accumulate), or --d-model / --layers.");
    }

    /// <summary>Bytes as "123 MiB" / "1.5 GiB".</summary>
    public static string Format(long bytes) => bytes switch
    {
        >= 1L << 30 => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 30):F1} GiB"),
        >= 1L << 20 => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 20):F0} MiB"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{bytes / 1024.0:F0} KiB"),
    };
}
