using GpuTransformer.Kernels.Backends;

namespace GpuTransformer.Layers;

/// <summary>
/// Device bytes a model needs for one training step at a given batch shape, predicted from its
/// config before anything is allocated (so a trainer can refuse a config that does not fit): the
/// sum of what each owner reports — the model its parameter count, each layer its buffers at the
/// shape, the kernel families their scratch (<c>LayerNormKernels.BackwardScratchLength</c>,
/// <c>ReductionKernels.ColumnSumsScratchLength</c>, <c>TokenBuckets.DeviceBytes</c>).
/// <see cref="Module.DeviceBytes"/> measures the first three terms after a step; the tests hold
/// the two together.
/// </summary>
/// <param name="Parameters">Weights (float32).</param>
/// <param name="Gradients">One gradient per weight (allocated with the weight).</param>
/// <param name="Activations">The layers' forward and backward buffers at this shape (including the logits, whose gradient overwrites them).</param>
/// <param name="OptimizerState">AdamW's two moments per weight (held by the optimizer, not the model).</param>
/// <param name="Scratch">Outside the modules' buffers: the token buckets of the embeddings and the bias-gradient column-sum scratch of the reduction kernels.</param>
public sealed record MemoryEstimate(long Parameters, long Gradients, long Activations, long OptimizerState, long Scratch)
{
    /// <summary>Everything.</summary>
    public long Total => Parameters + Gradients + Activations + OptimizerState + Scratch;

    /// <summary>The part <see cref="Module.DeviceBytes"/> counts: parameters, gradients and activation buffers.</summary>
    public long ModuleBytes => Parameters + Gradients + Activations;

    /// <summary>
    /// A decoder-only model at [B, T]. <paramref name="training"/>: forward and backward buffers
    /// and active dropout; otherwise forward buffers only. Assumes a padded batch (a [B, T] mask).
    /// <paramref name="tuning"/>: the device's, where a training step may run attention unfused
    /// with its [B, H, T, T] buffers (<see cref="KernelTuning.UnfusedAttentionMaxLength"/>); null: fused.
    /// </summary>
    public static MemoryEstimate For(LanguageModelConfig config, int batch, int length, bool training = true, KernelTuning? tuning = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        return Of(LanguageModel.ParameterCount(config), LanguageModel.ActivationBytes(config, batch, length, training, tuning?.UnfusedAttentionMaxLength ?? 0),
            LanguageModel.ScratchBytes(config, batch, length));
    }

    /// <summary>
    /// An encoder–decoder model at source [B, S] and target [B, T]. <paramref name="training"/> as
    /// and <paramref name="tuning"/> as for the language model. Assumes padded batches.
    /// </summary>
    public static MemoryEstimate For(TransformerConfig config, int batch, int sourceLength, int targetLength, bool training = true, KernelTuning? tuning = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        return Of(Transformer.ParameterCount(config), Transformer.ActivationBytes(config, batch, sourceLength, targetLength, training, tuning?.UnfusedAttentionMaxLength ?? 0),
            Transformer.ScratchBytes(config, batch, sourceLength, targetLength));
    }

    /// <summary>Weights, their gradients and AdamW's two moments are float32 per parameter.</summary>
    private static MemoryEstimate Of(long parameters, long activationBytes, long scratchBytes) =>
        new(sizeof(float) * parameters, sizeof(float) * parameters, activationBytes, 2 * sizeof(float) * parameters, scratchBytes);
}
