using System.Diagnostics;
using System.Globalization;
using GpuTransformer.Kernels.Profiling;
using GpuTransformer.Training.Optimization;
using GpuTransformer.Training.Reporting;
using GpuTransformer.Training.Schedules;

namespace GpuTransformer.Training;

/// <summary>Why <see cref="Trainer.Run"/> returned.</summary>
public enum TrainingStatus
{
    /// <summary>All steps done.</summary>
    Completed,

    /// <summary>Stopped early because the time limit would have been exceeded; final evaluation and checkpoint done.</summary>
    TimeLimit,

    /// <summary>Stopped early on request (cancellation); final evaluation and checkpoint done.</summary>
    Cancelled,

    /// <summary>A loss, gradient norm or weight became NaN or ±∞; nothing was saved after the last good checkpoint.</summary>
    NonFinite,
}

/// <summary>How a run ended.</summary>
/// <param name="Status">Why it returned.</param>
/// <param name="Step">Optimizer steps done (all sessions).</param>
/// <param name="Message">One line for the user.</param>
/// <param name="Validation">The last validation result, if any.</param>
/// <param name="ElapsedSeconds">Training wall time (all sessions).</param>
/// <param name="TokensPerSecond">Training throughput of this session (steps only, evaluation and checkpoints excluded).</param>
/// <param name="CheckpointStep">Step of the last checkpoint written or resumed from, if any.</param>
public sealed record TrainingResult(TrainingStatus Status, long Step, string Message, EvaluationResult? Validation, double ElapsedSeconds, double TokensPerSecond, long? CheckpointStep);

/// <summary>
/// The training loop, shared by every <see cref="ITrainingTask"/>. One optimizer step: zero the
/// gradients; run <see cref="TrainerOptions.Accumulate"/> micro-batches (each backward scaled by
/// 1/k, so the step's gradient is their mean); stop if the loss is not finite; AdamW (decay only on
/// <see cref="Layers.Parameter.Decay"/> parameters, global-norm clipping on the device) at the
/// schedule's learning rate; stop if the gradient norm is not finite; evaluate and checkpoint on
/// their cadence and at the last step. The model is in training mode (dropout on) for the steps and
/// in evaluation mode for the evaluations.
/// <para>
/// Checkpoints (<see cref="Checkpoint"/>) hold everything the loop depends on — weights, moments,
/// AdamW's step, the dropout stream, the data position, step and token counts, the metrics — so a
/// run resumed with <see cref="Restore"/> computes exactly the losses an uninterrupted run does.
/// A checkpoint whose state is not finite is refused, so the file on disk is always the last good one.
/// </para>
/// </summary>
public sealed class Trainer : IDisposable
{
    private const int ThroughputWindow = 20;

    private readonly List<MetricsRecord> metrics = [];
    private readonly MetricsLogger? logger;
    private readonly IReadOnlyDictionary<string, string>? checkpointMetadata;
    private readonly Queue<(long Tokens, double Seconds)> recent = new();
    private double elapsedBefore;
    private long? checkpointStep;

    /// <param name="task">What to train.</param>
    /// <param name="options">How (validated).</param>
    /// <param name="logger">Receives every metrics record, or null.</param>
    /// <param name="checkpointMetadata">Extra metadata for every checkpoint (e.g. preset, backend).</param>
    /// <param name="schedule">A schedule to use instead of <see cref="TrainerOptions.Schedule"/> (tests; it is not stored).</param>
    public Trainer(ITrainingTask task, TrainerOptions options, MetricsLogger? logger = null,
        IReadOnlyDictionary<string, string>? checkpointMetadata = null, ILearningRateSchedule? schedule = null)
    {
        ArgumentNullException.ThrowIfNull(task);
        ArgumentNullException.ThrowIfNull(options);
        Task = task;
        Options = options.Validate();
        Schedule = schedule ?? options.Schedule.Create(options.Steps);
        Optimizer = new AdamWOptimizer(task.Model.Parameters(), options.Optimizer);
        this.logger = logger;
        this.checkpointMetadata = checkpointMetadata;
    }

    public ITrainingTask Task { get; }

    public TrainerOptions Options { get; }

    public ILearningRateSchedule Schedule { get; }

    public AdamWOptimizer Optimizer { get; }

    /// <summary>Optimizer steps done.</summary>
    public long Step { get; private set; }

    /// <summary>
    /// A profiler (attached to the task's device) that times every training step after
    /// <see cref="ProfileAfterStep"/> — data, micro-steps and the optimizer, not evaluations or
    /// checkpoints — one window per step; null (the default) profiles nothing.
    /// </summary>
    public KernelProfiler? Profiler { get; set; }

    /// <summary>Steps of this session left out of the profile (warm-up: kernel compilation, first allocations).</summary>
    public int ProfileAfterStep { get; set; } = 2;

    /// <summary>Training target tokens seen.</summary>
    public long Tokens { get; private set; }

    /// <summary>Every metrics record so far (a resumed run starts with the checkpoint's).</summary>
    public IReadOnlyList<MetricsRecord> Metrics => metrics;

    /// <summary>The latest validation result.</summary>
    public EvaluationResult? LastValidation { get; private set; }

    /// <summary>Continues the run saved in <paramref name="checkpoint"/>: weights, moments, dropout stream, data position, counters, metrics.</summary>
    /// <exception cref="InvalidDataException">The checkpoint holds another kind of model or does not fit this one.</exception>
    public void Restore(CheckpointFile checkpoint)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        if (checkpoint.ModelKind != Task.Model.Config.Kind)
            throw new InvalidDataException($"Checkpoint '{checkpoint.Path}' holds a '{checkpoint.ModelKind}' model; this task trains a '{Task.Model.Config.Kind}'.");
        var state = checkpoint.State();
        checkpoint.LoadModel(Task.Model);
        checkpoint.LoadOptimizer(Optimizer);
        Task.Model.RandomState = state.RandomState;
        Task.RestoreDataState(state.DataState);
        Step = state.Step;
        Tokens = state.Tokens;
        elapsedBefore = state.ElapsedSeconds;
        metrics.Clear();
        metrics.AddRange(state.Metrics);
        var lastValidation = metrics.LastOrDefault(r => r.ValLoss is not null);
        LastValidation = lastValidation is null ? null : new EvaluationResult(lastValidation.ValLoss!.Value, 0);
        checkpointStep = Step;
    }

    /// <summary>Writes a checkpoint of the current state to <paramref name="path"/>.</summary>
    /// <exception cref="NonFiniteStateException">The state holds NaN or ±∞ (nothing written).</exception>
    public void SaveCheckpoint(string path)
    {
        Checkpoint.Save(path, Task, Optimizer, Options, CurrentState(elapsedBefore), checkpointMetadata);
        checkpointStep = Step;
    }

    /// <summary>
    /// Trains until <see cref="TrainerOptions.Steps"/>, the time limit, a cancellation, or a
    /// non-finite value. Reports each step to <paramref name="progress"/> and evaluation results as lines.
    /// </summary>
    public TrainingResult Run(ITrainingProgress? progress = null, CancellationToken cancellation = default)
    {
        var clock = Stopwatch.StartNew();
        var model = Task.Model;
        var scale = 1f / Options.Accumulate;
        double stepSeconds = 0, evaluationSeconds = 0, checkpointSeconds = 0;
        double sessionStepSeconds = 0;
        long sessionTokens = 0;
        var c = CultureInfo.InvariantCulture;
        double Elapsed() => elapsedBefore + clock.Elapsed.TotalSeconds;
        TrainingResult Result(TrainingStatus status, string message) =>
            new(status, Step, message, LastValidation, Elapsed(), sessionStepSeconds > 0 ? sessionTokens / sessionStepSeconds : 0, checkpointStep);

        if (Step >= Options.Steps)
            return Result(TrainingStatus.Completed, string.Create(c, $"Nothing to do: the run is at step {Step} of {Options.Steps}."));
        model.Training = true;
        var firstStep = Step;
        while (Step < Options.Steps)
        {
            var stepStart = clock.Elapsed.TotalSeconds;
            var profiled = Profiler is not null && Step - firstStep >= ProfileAfterStep;
            if (profiled)
                Profiler!.Start();
            model.ZeroGradients();
            double lossSum = 0;
            long tokens = 0;
            for (var i = 0; i < Options.Accumulate; i++)
            {
                var micro = Task.TrainMicroBatch(scale);
                lossSum += micro.Loss;
                tokens += micro.Tokens;
            }
            var loss = lossSum / Options.Accumulate;
            if (!double.IsFinite(loss))
                return Result(TrainingStatus.NonFinite, NonFiniteMessage($"the training loss is {loss.ToString(c)} at step {Step + 1}"));

            var learningRate = Schedule.At(Step + 1);
            var norm = Optimizer.Step(learningRate, readNorm: true);
            if (profiled)
                Profiler!.Stop(1);
            Step++;
            Tokens += tokens;
            if (!float.IsFinite(norm))
                return Result(TrainingStatus.NonFinite, NonFiniteMessage($"the gradient norm is {norm.ToString(c)} at step {Step}"));
            var seconds = clock.Elapsed.TotalSeconds - stepStart;
            sessionStepSeconds += seconds;
            sessionTokens += tokens;
            stepSeconds = stepSeconds == 0 ? seconds : (0.8 * stepSeconds) + (0.2 * seconds);
            recent.Enqueue((tokens, seconds));
            if (recent.Count > ThroughputWindow)
                recent.Dequeue();

            // Decide now whether this is the last step, so the final evaluation and checkpoint belong to it.
            var status = TrainingStatus.Completed;
            if (Step < Options.Steps && cancellation.IsCancellationRequested)
                status = TrainingStatus.Cancelled;
            else if (Step < Options.Steps && Options.TimeLimit is { } limit
                && clock.Elapsed.TotalSeconds + stepSeconds + evaluationSeconds + checkpointSeconds > limit.TotalSeconds)
                status = TrainingStatus.TimeLimit;
            var last = Step == Options.Steps || status != TrainingStatus.Completed;

            EvaluationResult? validation = null;
            if (last || (Options.EvaluateEvery > 0 && Step % Options.EvaluateEvery == 0))
            {
                var evalStart = clock.Elapsed.TotalSeconds;
                model.Training = false;
                validation = Task.Evaluate();
                model.Training = true;
                evaluationSeconds = clock.Elapsed.TotalSeconds - evalStart;
                if (!double.IsFinite(validation.Value.Loss))
                    return Result(TrainingStatus.NonFinite, NonFiniteMessage($"the validation loss is {validation.Value.Loss.ToString(c)} at step {Step}"));
                LastValidation = validation;
                // An evaluation may ask to stop (e.g. a target reached): stop here, with the weights it judged.
                if (!last && cancellation.IsCancellationRequested)
                    (status, last) = (TrainingStatus.Cancelled, true);
            }

            var record = new MetricsRecord(Step, Tokens, loss, learningRate, norm, Throughput(), Elapsed(),
                validation?.Loss, validation?.Perplexity);
            metrics.Add(record);
            logger?.Log(record);
            progress?.Report(new ProgressUpdate(Step, loss, record.TokensPerSecond, LastValidation?.Loss));
            if (validation is { } v)
                progress?.Log(string.Create(c, $"step {Step}: train loss {loss:F4}, validation loss {v.Loss:F4}, perplexity {v.Perplexity:F2}"));

            if (Options.CheckpointPath is { } path && (last || (Options.CheckpointEvery > 0 && Step % Options.CheckpointEvery == 0)))
            {
                var saveStart = clock.Elapsed.TotalSeconds;
                try
                {
                    Checkpoint.Save(path, Task, Optimizer, Options, CurrentState(Elapsed()), checkpointMetadata);
                }
                catch (NonFiniteStateException e)
                {
                    return Result(TrainingStatus.NonFinite, NonFiniteMessage($"the model state is not finite after step {Step} ({e.Message})"));
                }
                checkpointStep = Step;
                checkpointSeconds = clock.Elapsed.TotalSeconds - saveStart;
            }

            if (last)
            {
                var why = status switch
                {
                    TrainingStatus.TimeLimit => string.Create(c, $"Stopped at step {Step} of {Options.Steps}: the time limit {Options.TimeLimit} would be exceeded by another step"),
                    TrainingStatus.Cancelled => string.Create(c, $"Stopped at step {Step} of {Options.Steps} on request"),
                    _ => string.Create(c, $"Trained {Step} steps"),
                };
                return Result(status, why + (checkpointStep == Step ? "; final evaluation and checkpoint done." : "; final evaluation done."));
            }
        }
        return Result(TrainingStatus.Completed, string.Create(c, $"Trained {Step} steps."));
    }

    public void Dispose() => Optimizer.Dispose();

    private TrainerState CurrentState(double elapsed) =>
        new(Step, Tokens, elapsed, Task.Model.RandomState, Task.SaveDataState(), metrics.ToList());

    private double Throughput()
    {
        var seconds = recent.Sum(r => r.Seconds);
        return seconds > 0 ? recent.Sum(r => r.Tokens) / seconds : 0;
    }

    private string NonFiniteMessage(string what)
    {
        var kept = checkpointStep is { } s && Options.CheckpointPath is { } path
            ? string.Create(CultureInfo.InvariantCulture, $" The last good checkpoint (step {s}) is kept at '{path}'.")
            : " No checkpoint was written.";
        return $"Training diverged: {what}. Lower the learning rate (--lr) or raise the warmup (--warmup).{kept}";
    }
}
