using GpuTransformer.Kernels.Backends;
using GpuTransformer.Layers.IO;

namespace GpuTransformer.Layers;

/// <summary>What one training micro-step gave: its mean loss and the target tokens it counted.</summary>
/// <param name="Loss">Mean cross-entropy over the counted targets, nats/token.</param>
/// <param name="Tokens">Targets counted (not ignored).</param>
public readonly record struct MicroBatchResult(double Loss, long Tokens);

/// <summary>
/// A model as training, evaluation, parity checks and checkpoints see it, whichever it is
/// (<see cref="LanguageModel"/>, <see cref="Transformer"/>): a <see cref="ModelBatch"/> in,
/// logits out; the loss, with a gradient scale folded into the cross-entropy kernel's gradient;
/// the backward; and the one training micro-step made of the three (<see cref="TrainStep"/>).
/// Also what a run saves and restores: the parameters with their state_dict names, the config
/// (its kind and JSON, as a state dict stores them), the dropout stream, and the mode.
/// <see cref="Model"/> implements the part both models share.
/// </summary>
public interface IModel : IDisposable
{
    /// <summary>The configuration: its <see cref="IModelConfig.Kind"/> and JSON are what a state dict stores.</summary>
    IModelConfig Config { get; }

    /// <summary>The device everything of the model lives on.</summary>
    ComputeDevice Device { get; }

    /// <summary>Training mode (dropout active) or evaluation mode.</summary>
    bool Training { get; set; }

    /// <summary>Evaluation mode until the returned scope is disposed, then the mode before it: <c>using (model.EvaluationMode()) { … }</c>.</summary>
    EvaluationScope EvaluationMode();

    /// <summary>The dropout stream (seed, offset): save it with a checkpoint, restore it to resume.</summary>
    DropoutState RandomState { get; set; }

    /// <summary>Cross-entropy ignoring pad_id; set its <see cref="CrossEntropyLoss.LabelSmoothing"/> here.</summary>
    CrossEntropyLoss LossFunction { get; }

    /// <summary>Every parameter with its state_dict name, in registration order.</summary>
    IEnumerable<Parameter> Parameters();

    /// <summary>Number of learnable scalars.</summary>
    long ParameterCount();

    /// <summary>Sets every gradient to zero (once per optimizer step: the micro-steps accumulate).</summary>
    void ZeroGradients();

    /// <summary>Bytes of device memory held by parameters, gradients and activation buffers.</summary>
    long DeviceBytes();

    /// <summary>Checks every id, mask and shape of <paramref name="batch"/> against the model, before anything runs.</summary>
    /// <exception cref="ArgumentException">The first problem, naming the tensor, the id and its position.</exception>
    void Validate(ModelBatch batch);

    /// <summary>Teacher-forced logits of the batch (its targets are not read). // → logits [B, T, V]</summary>
    /// <exception cref="ArgumentException">The inputs do not fit the model (before any launch).</exception>
    Tensor<float> Forward(ModelBatch batch);

    /// <summary>
    /// Mean cross-entropy of the last forward's logits against <paramref name="targets"/> (pad_id
    /// ignored); replaces the logits by <paramref name="gradientScale"/>·dLoss/dLogits in the same
    /// launch (<c>LossFunction.Backward()</c> returns them). // targets [B, T]
    /// </summary>
    float Loss(TokenIds targets, float gradientScale = 1f);

    /// <summary>Backward of the last forward: accumulates every parameter's gradient. // dLogits [B, T, V]</summary>
    void Backward(Tensor<float> dLogits);

    /// <summary>
    /// The training micro-step: <see cref="Validate"/>, <see cref="Forward"/>,
    /// <see cref="Loss"/> with <paramref name="gradientScale"/> (1/k when k micro-batches make
    /// one optimizer step, so the step's gradient is the mean of theirs), <see cref="Backward"/>.
    /// Gradients accumulate.
    /// </summary>
    MicroBatchResult TrainStep(ModelBatch batch, float gradientScale = 1f);

    /// <summary>Writes the parameters with the config's kind and JSON (<see cref="StateDict.Save(Module, string, string, string, IReadOnlyDictionary{string, string}?, string)"/>).</summary>
    void SaveStateDict(string path, IReadOnlyDictionary<string, string>? extraMetadata = null, string prefix = "");

    /// <summary>Copies a state dict's tensors into the parameters (<see cref="StateDict.Load(Module, SafeTensorFile, StateDictLoadOptions?)"/>).</summary>
    void LoadStateDict(SafeTensorFile file, StateDictLoadOptions? options = null);
}
