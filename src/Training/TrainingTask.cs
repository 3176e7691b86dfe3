using GpuTransformer.Layers;

namespace GpuTransformer.Training;

/// <summary>A loss measured over held-out data.</summary>
/// <param name="Loss">Mean cross-entropy per target token, nats/token.</param>
/// <param name="Tokens">Targets scored.</param>
/// <param name="StopTraining">
/// The task's goal is reached (e.g. a target accuracy): the trainer stops after this evaluation,
/// with its checkpoint, as <see cref="TrainingStatus.TargetReached"/>.
/// </param>
public readonly record struct EvaluationResult(double Loss, long Tokens, bool StopTraining = false)
{
    /// <summary>exp(loss).</summary>
    public double Perplexity => Math.Exp(Loss);
}

/// <summary>
/// What <see cref="Trainer"/> trains: a model and its data. The trainer owns the loop (optimizer,
/// schedule, accumulation, evaluation cadence, checkpoints, stopping); a task draws its next
/// training batch and runs the model's micro-step on it (<see cref="IModel.TrainStep"/>), scores
/// held-out data, and says what to save so a resumed run continues exactly.
/// <see cref="LanguageModelTask"/> is the decoder-only language model,
/// <see cref="Tasks.NumbersToWordsTrainingTask"/> an encoder–decoder one.
/// </summary>
public interface ITrainingTask
{
    /// <summary>
    /// The model. The trainer gives its parameters to AdamW, zeroes their gradients, sets
    /// <see cref="IModel.Training"/>, and saves and restores its weights, config and
    /// <see cref="IModel.RandomState"/> with checkpoints.
    /// </summary>
    IModel Model { get; }

    /// <summary>
    /// <see cref="IModel.TrainStep"/> on the next training micro-batch. Gradients ACCUMULATE into
    /// the parameters (the trainer zeroes them once per optimizer step); dLoss is multiplied by
    /// <paramref name="gradientScale"/> (1/k when k micro-batches make one step, so the step's
    /// gradient is the mean of theirs). Advances the task's data position.
    /// </summary>
    MicroBatchResult TrainMicroBatch(float gradientScale);

    /// <summary>
    /// The loss on the task's fixed validation data (the trainer switches the model to evaluation
    /// mode around the call), and whether training should stop here (<see cref="EvaluationResult.StopTraining"/>).
    /// </summary>
    EvaluationResult Evaluate();

    /// <summary>The data position (e.g. the batcher's state) as text, for checkpoints.</summary>
    string SaveDataState();

    /// <summary>Continues from a data position saved by <see cref="SaveDataState"/>.</summary>
    /// <exception cref="InvalidDataException">The state does not belong to this task's data.</exception>
    void RestoreDataState(string state);

    /// <summary>Facts about the data stored in checkpoints (tokenizer JSON and fingerprint, corpus identity), keyed by <see cref="Checkpoint"/>'s metadata keys.</summary>
    IReadOnlyDictionary<string, string> Metadata();
}
