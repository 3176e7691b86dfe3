using GpuTransformer.Layers;

namespace GpuTransformer.Training;

/// <summary>What one training micro-batch gave: its mean loss and the target tokens it counted.</summary>
/// <param name="Loss">Mean cross-entropy over the counted targets, nats/token.</param>
/// <param name="Tokens">Targets counted (not ignored).</param>
public readonly record struct MicroBatchResult(double Loss, long Tokens);

/// <summary>A loss measured over held-out data.</summary>
/// <param name="Loss">Mean cross-entropy per target token, nats/token.</param>
/// <param name="Tokens">Targets scored.</param>
public readonly record struct EvaluationResult(double Loss, long Tokens)
{
    /// <summary>exp(loss).</summary>
    public double Perplexity => Math.Exp(Loss);
}

/// <summary>
/// What <see cref="Trainer"/> trains: a model and its data. The trainer owns the loop (optimizer,
/// schedule, accumulation, evaluation cadence, checkpoints, stopping); a task knows how to run one
/// micro-batch of its model on its next training batch, how to score held-out data, and what to
/// save so a resumed run continues exactly. <see cref="LanguageModelTask"/> is the decoder-only
/// language model; an encoder–decoder task implements the same members around
/// <see cref="Transformer.TrainStep"/>.
/// </summary>
public interface ITrainingTask
{
    /// <summary>The model. The trainer gives its parameters to AdamW, zeroes their gradients and sets <see cref="Module.Training"/>.</summary>
    Module Model { get; }

    /// <summary>The model kind stored in checkpoints (<see cref="StateDict.LanguageModelKind"/> or <see cref="StateDict.TransformerKind"/>).</summary>
    string ModelKind { get; }

    /// <summary>The model's configuration as JSON (PyTorch names), stored in checkpoints.</summary>
    string ConfigJson { get; }

    /// <summary>The model's dropout stream (saved and restored with checkpoints).</summary>
    DropoutState RandomState { get; set; }

    /// <summary>
    /// Forward, loss and backward of the next training micro-batch. Gradients ACCUMULATE into the
    /// parameters (the trainer zeroes them once per optimizer step); dLoss is multiplied by
    /// <paramref name="gradientScale"/> first (1/k when k micro-batches make one step, so the step's
    /// gradient is the mean of theirs). Advances the task's data position.
    /// </summary>
    MicroBatchResult TrainMicroBatch(float gradientScale);

    /// <summary>The loss on the task's fixed validation data (the trainer switches the model to evaluation mode around the call).</summary>
    EvaluationResult Evaluate();

    /// <summary>The data position (e.g. the batcher's state) as text, for checkpoints.</summary>
    string SaveDataState();

    /// <summary>Continues from a data position saved by <see cref="SaveDataState"/>.</summary>
    /// <exception cref="InvalidDataException">The state does not belong to this task's data.</exception>
    void RestoreDataState(string state);

    /// <summary>Facts about the data stored in checkpoints (tokenizer JSON and fingerprint, corpus identity), keyed by <see cref="Checkpoint"/>'s metadata keys.</summary>
    IReadOnlyDictionary<string, string> Metadata();
}
