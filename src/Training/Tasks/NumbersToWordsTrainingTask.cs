using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using GpuTransformer.Kernels;
using GpuTransformer.Layers;
using GpuTransformer.Training.Distributed;

namespace GpuTransformer.Training.Tasks;

/// <summary>One held-out check of <see cref="NumbersToWordsTrainingTask.Evaluate"/>.</summary>
/// <param name="Step">Training batches drawn when it ran (optimizer steps without accumulation).</param>
/// <param name="Elapsed">Wall time since this session's first training batch, checks included.</param>
/// <param name="Loss">Teacher-forced held-out loss, nats/token.</param>
/// <param name="Accuracy">Greedy exact match on the held-out check set.</param>
public readonly record struct TranslationCheck(long Step, TimeSpan Elapsed, double Loss, double Accuracy);

/// <summary>
/// The numbers-to-words task as an <see cref="ITrainingTask"/> for <see cref="Trainer"/>: each
/// micro-batch is <see cref="NumbersToWordsTask.TrainingBatch"/> number k (k counts the batches
/// drawn, which is the whole data position), forward/loss/backward of the encoder–decoder;
/// <see cref="Evaluate"/> scores the held-out check set twice — teacher-forced loss (what the
/// trainer logs) and greedy exact match (what the task is about) — and sets
/// <see cref="EvaluationResult.StopTraining"/> once the exact match reaches the target, so the
/// trainer stops there with its checkpoint (<see cref="TrainingStatus.TargetReached"/>).
/// </summary>
internal sealed class NumbersToWordsTrainingTask : IShardableTrainingTask
{
    private readonly List<TranslationCheck> checks = [];
    private readonly Stopwatch clock = new();
    private long step;

    /// <param name="model">The encoder–decoder (vocabularies of <paramref name="task"/>, pad_id 0).</param>
    /// <param name="task">The task.</param>
    /// <param name="batchSize">Pairs per micro-batch.</param>
    /// <param name="targetAccuracy">Held-out greedy exact match that stops training (&gt; 1: never).</param>
    /// <param name="checkSize">Held-out numbers per check (the first of the evaluation set; 0: all).</param>
    /// <exception cref="ArgumentException">The model does not fit the task.</exception>
    public NumbersToWordsTrainingTask(Transformer model, NumbersToWordsTask task, int batchSize, double targetAccuracy = 0.95, int checkSize = 0)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(task);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(checkSize);
        NumberTranslation.RequireMatches(model, task);
        Model = model;
        Task = task;
        BatchSize = batchSize;
        TargetAccuracy = targetAccuracy;
        CheckNumbers = checkSize == 0 ? task.EvaluationNumbers : [.. task.EvaluationNumbers.Take(checkSize)];
    }

    /// <summary>The encoder–decoder.</summary>
    public Transformer Model { get; }

    IModel ITrainingTask.Model => Model;

    /// <summary>The task.</summary>
    public NumbersToWordsTask Task { get; }

    /// <summary>Pairs per micro-batch.</summary>
    public int BatchSize { get; }

    /// <summary>Micro-batch m is <see cref="NumbersToWordsTask.TrainingBatch"/> number m.</summary>
    public long NextMicroBatch
    {
        get => step;
        set => step = value >= 0 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "A micro-batch number is ≥ 0.");
    }

    int IShardableTrainingTask.SequencesPerMicroBatch => BatchSize;

    /// <summary>The exact match that stops training.</summary>
    public double TargetAccuracy { get; }

    /// <summary>The held-out numbers of each check.</summary>
    public IReadOnlyList<long> CheckNumbers { get; }

    /// <summary>Every check so far (this session).</summary>
    public IReadOnlyList<TranslationCheck> Checks => checks;

    /// <summary>The first check that reached the target, if any.</summary>
    public TranslationCheck? FirstAtTarget { get; private set; }

    /// <summary>Receives one line per check (e.g. the progress display's log).</summary>
    public Action<string>? Log { get; set; }

    /// <inheritdoc/>
    public MicroBatchResult TrainMicroBatch(float gradientScale)
    {
        clock.Start();
        var batch = Task.TrainingBatch(step++, BatchSize);
        return Model.TrainStep(new ModelBatch(
            new TokenIds(batch.TargetInput, batch.BatchSize, batch.TargetLength),
            new TokenIds(batch.TargetOutput, batch.BatchSize, batch.TargetLength))
        {
            Source = new TokenIds(batch.Source, batch.BatchSize, batch.SourceLength),
        }, gradientScale);
    }

    /// <summary>Teacher-forced held-out loss (returned) and greedy exact match (logged, recorded, and the stop flag).</summary>
    public EvaluationResult Evaluate()
    {
        var loss = NumberTranslation.HeldOutLoss(Model, Task, CheckNumbers);
        var exact = NumberTranslation.Evaluate(Model, Task, CheckNumbers, beamWidth: 1, maxExamples: 0);
        var check = new TranslationCheck(step, clock.Elapsed, loss.Loss, exact.Accuracy);
        checks.Add(check);
        Log?.Invoke(string.Create(CultureInfo.InvariantCulture,
            $"step {step}: held-out greedy exact match {exact.Accuracy:P1} ({exact.Correct}/{exact.Total}), {clock.Elapsed.TotalSeconds:F0} s"));
        var reached = exact.Accuracy >= TargetAccuracy;
        if (reached && FirstAtTarget is null)
            FirstAtTarget = check;
        return loss with { StopTraining = reached };
    }

    /// <inheritdoc/>
    public string SaveDataState() => new JsonObject
    {
        ["seed"] = Task.Options.Seed.ToString(CultureInfo.InvariantCulture),
        ["step"] = step,
        ["batch_size"] = BatchSize,
    }.ToJsonString();

    /// <inheritdoc/>
    public void RestoreDataState(string state)
    {
        ArgumentNullException.ThrowIfNull(state);
        try
        {
            var node = JsonNode.Parse(state) ?? throw new InvalidDataException("The task's data state is empty.");
            var seed = ulong.Parse(node["seed"]!.GetValue<string>(), NumberStyles.None, CultureInfo.InvariantCulture);
            var batchSize = node["batch_size"]!.GetValue<int>();
            if (seed != Task.Options.Seed || batchSize != BatchSize)
                throw new InvalidDataException($"The checkpoint drew batches of {batchSize} with task seed {seed}; this run uses {BatchSize} with seed {Task.Options.Seed}.");
            step = node["step"]!.GetValue<long>();
        }
        catch (Exception e) when (e is JsonException or FormatException or InvalidOperationException or NullReferenceException or OverflowException)
        {
            throw new InvalidDataException($"The saved task state does not fit this run: {e.Message}", e);
        }
    }

    /// <summary>The task description under <see cref="Checkpoint.TaskKey"/> (<see cref="NumberTranslation.TaskDescription"/>).</summary>
    public IReadOnlyDictionary<string, string> Metadata() => new Dictionary<string, string>(StringComparer.Ordinal)
    {
        [Checkpoint.TaskKey] = NumberTranslation.TaskDescription(Task, BatchSize),
    };
}
