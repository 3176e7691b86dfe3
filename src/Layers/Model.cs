using GpuTransformer.Kernels.Backends;
using GpuTransformer.Kernels.Profiling;
using GpuTransformer.Layers.IO;

namespace GpuTransformer.Layers;

/// <summary>
/// What <see cref="LanguageModel"/> and <see cref="Transformer"/> share behind <see cref="IModel"/>,
/// written once: the dropout stream every dropout of the model draws from, the loss on the output
/// projection's logits, the training micro-step, and the state dict. A model supplies its config,
/// its output projection and loss, and its own <see cref="Validate"/>, <see cref="Forward"/> and
/// <see cref="Backward"/>.
/// </summary>
public abstract class Model : Module, IModel
{
    /// <summary>A model whose dropout masks come from a stream seeded with <paramref name="seed"/> (as its weights).</summary>
    protected Model(ComputeDevice device, int seed)
        : base(device) => DropoutStream = new DropoutStream((ulong)seed);

    /// <inheritdoc/>
    public abstract IModelConfig Config { get; }

    /// <summary>The projection whose output the loss reads (logits [B, T, V]).</summary>
    public abstract Linear OutputProjection { get; }

    /// <inheritdoc/>
    public abstract CrossEntropyLoss LossFunction { get; }

    /// <inheritdoc/>
    public DropoutState RandomState
    {
        get => DropoutStream.State;
        set => DropoutStream.State = value;
    }

    /// <summary>The stream the model's dropout layers share (give it to each of them).</summary>
    protected DropoutStream DropoutStream { get; }

    /// <inheritdoc/>
    public abstract void Validate(ModelBatch batch);

    /// <inheritdoc/>
    public abstract Tensor<float> Forward(ModelBatch batch);

    /// <inheritdoc/>
    public abstract void Backward(Tensor<float> dLogits);

    /// <inheritdoc/>
    /// <exception cref="ArgumentException">Targets of another shape than the logits' rows, or outside the vocabulary.</exception>
    public float Loss(TokenIds targets, float gradientScale = 1f) => LossFunction.Forward(OutputProjection.Output, targets, gradientScale);

    /// <inheritdoc/>
    /// <exception cref="ArgumentException">The batch does not fit the model (<see cref="Validate"/>, before any launch).</exception>
    public MicroBatchResult TrainStep(ModelBatch batch, float gradientScale = 1f)
    {
        Validate(batch);
        float loss;
        using (Device.InPhase(ProfilePhase.Forward))      // (profiler labels; no-ops otherwise)
        {
            Forward(batch);                               // logits [B, T, V]
            using var lossLabel = Device.InLayer("loss");
            loss = Loss(batch.Targets, gradientScale);    // logits ← scale·dLoss/dLogits
        }
        using var backward = Device.InPhase(ProfilePhase.Backward);
        Backward(LossFunction.Backward());
        return new MicroBatchResult(loss, LossFunction.CountedTargets);
    }

    /// <inheritdoc/>
    public void SaveStateDict(string path, IReadOnlyDictionary<string, string>? extraMetadata = null, string prefix = "") =>
        StateDict.Save(this, path, Config.Kind, Config.ToJson(), extraMetadata, prefix);

    /// <inheritdoc/>
    public void LoadStateDict(SafeTensorFile file, StateDictLoadOptions? options = null) => StateDict.Load(this, file, options);
}
