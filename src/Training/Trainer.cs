using System.Diagnostics;
using System.Globalization;
using GpuTransformer.Training.Distributed;
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

    /// <summary>Stopped early on request (cancellation, e.g. Ctrl+C); final evaluation and checkpoint done.</summary>
    Cancelled,

    /// <summary>Stopped early because an evaluation said the task's goal is reached (<see cref="EvaluationResult.StopTraining"/>); its checkpoint done.</summary>
    TargetReached,

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
/// AdamW's step, the dropout stream, the data position, step and token counts — so a run resumed
/// with <see cref="Restore"/> computes exactly the losses an uninterrupted run does. The metrics
/// history is the run's log (<see cref="MetricsLogger"/>), handed back to <see cref="Restore"/>.
/// A checkpoint whose state is not finite is refused, so the file on disk is always the last good one.
/// </para>
/// <para>
/// Data parallel (a <see cref="DataParallel"/> given): this rank trains its share of each step's k
/// micro-batches, the gradients and losses are reduced over the ranks before the optimizer step,
/// rank 0's stop decisions are broadcast, and only rank 0 writes checkpoints; the hooks are the
/// lines that call <c>parallel</c>.
/// </para>
/// </summary>
public sealed class Trainer : IDisposable
{
    private readonly List<MetricsRecord> metrics = [];
    private readonly MetricsLogger? logger;
    private readonly IReadOnlyDictionary<string, string>? checkpointMetadata;
    private readonly DataParallel? parallel;
    private readonly double[] microBatchLosses;
    private double elapsedBefore;
    private long? checkpointStep;

    /// <param name="task">What to train.</param>
    /// <param name="options">How (validated).</param>
    /// <param name="logger">Receives every metrics record, or null.</param>
    /// <param name="checkpointMetadata">Extra metadata for every checkpoint (e.g. preset, backend).</param>
    /// <param name="schedule">A schedule to use instead of <see cref="TrainerOptions.Schedule"/> (tests; it is not stored).</param>
    /// <param name="parallel">The data-parallel job this rank belongs to (made for <paramref name="task"/> and <paramref name="options"/>), or null for one process.</param>
    public Trainer(ITrainingTask task, TrainerOptions options, MetricsLogger? logger = null,
        IReadOnlyDictionary<string, string>? checkpointMetadata = null, ILearningRateSchedule? schedule = null, DataParallel? parallel = null)
    {
        ArgumentNullException.ThrowIfNull(task);
        ArgumentNullException.ThrowIfNull(options);
        Task = task;
        Options = options.Validate();
        Schedule = schedule ?? options.Schedule.Create(options.Steps);
        Optimizer = new AdamWOptimizer(task.Model.Parameters(), options.Optimizer);
        this.logger = logger;
        this.parallel = parallel;
        microBatchLosses = new double[parallel?.MicroBatchesPerRank ?? Options.Accumulate];
        this.checkpointMetadata = new Dictionary<string, string>(checkpointMetadata ?? new Dictionary<string, string>())
        {
            [Checkpoint.RanksKey] = (parallel?.Communicator.Size ?? 1).ToString(CultureInfo.InvariantCulture),
        };
    }

    /// <summary>What is trained.</summary>
    public ITrainingTask Task { get; }

    /// <summary>The trainer's options.</summary>
    public TrainerOptions Options { get; }

    /// <summary>The learning rate per step.</summary>
    public ILearningRateSchedule Schedule { get; }

    /// <summary>AdamW over the task's model's parameters.</summary>
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

    /// <summary>
    /// Continues the run saved in <paramref name="checkpoint"/>: weights, moments, dropout stream, data
    /// position, counters; <see cref="Metrics"/> becomes the records of <paramref name="history"/> (the
    /// run's metrics log, <see cref="MetricsLogger.ReadJsonl"/>) up to the checkpoint's step — later
    /// ones are done again.
    /// </summary>
    /// <para>Data parallel: every rank calls it with the same checkpoint.</para>
    /// <exception cref="InvalidDataException">The checkpoint holds another kind of model, does not fit this one, or was written by another number of ranks.</exception>
    /// <exception cref="Distributed.CommunicatorException">The ranks resumed different states.</exception>
    public void Restore(CheckpointFile checkpoint, IEnumerable<MetricsRecord>? history = null)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        if (checkpoint.ModelKind != Task.Model.Config.Kind)
            throw new InvalidDataException($"Checkpoint '{checkpoint.Path}' holds a '{checkpoint.ModelKind}' model; this task trains a '{Task.Model.Config.Kind}'.");
        DataParallel.RequireSameRanks(checkpoint, parallel?.Communicator.Size ?? 1);
        var state = checkpoint.State();
        checkpoint.LoadModel(Task.Model);
        checkpoint.LoadOptimizer(Optimizer);
        Task.Model.RandomState = state.RandomState;
        Task.RestoreDataState(state.DataState);
        parallel?.Communicator.RequireSameOnAllRanks("the checkpoint's state (step, data position, dropout stream): every rank must resume the same file",
            $"{state.Step}|{state.DataState}|{state.RandomState}|{Optimizer.StepCount}");
        Step = state.Step;
        Tokens = state.Tokens;
        elapsedBefore = state.ElapsedSeconds;
        metrics.Clear();
        metrics.AddRange((history ?? []).Where(r => r.Step <= Step));
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
    /// Trains until <see cref="TrainerOptions.Steps"/>, the time limit, a cancellation (Ctrl+C), an
    /// evaluation that reports the target reached, or a non-finite value. Reports each step to
    /// <paramref name="progress"/> and evaluation results as lines. Each step: the optimizer step,
    /// the decision whether it is the last, the evaluation and checkpoint due after it, its metrics record.
    /// </summary>
    public TrainingResult Run(ITrainingProgress? progress = null, CancellationToken cancellation = default)
    {
        var session = new Session(elapsedBefore);
        if (Step >= Options.Steps)
            return Result(session, TrainingStatus.Completed, Invariant($"Nothing to do: the run is at step {Step} of {Options.Steps}."));
        Task.Model.Training = true;
        parallel?.BroadcastParameters();
        var firstStep = Step;
        while (true)
        {
            var stepStart = session.Seconds;
            var profiled = Profiler is not null && Step - firstStep >= ProfileAfterStep;
            if (profiled)
                Profiler!.Start();
            var step = OptimizerStep();
            if (profiled)
                Profiler!.Stop(1);
            if (step.Failure is { } failure)
                return Result(session, TrainingStatus.NonFinite, NonFiniteMessage(failure));
            session.StepDone(step.Tokens, session.Seconds - stepStart);

            // Decide now whether this is the last step, so the final evaluation and checkpoint belong to it.
            var status = TrainingStatus.Completed;
            if (Step < Options.Steps && cancellation.IsCancellationRequested)
                status = TrainingStatus.Cancelled;
            else if (Step < Options.Steps && Options.TimeLimit is { } limit && session.Forecast.Exceeds(session.Seconds, limit))
                status = TrainingStatus.TimeLimit;
            if (parallel is not null)
                status = parallel.Agree(status); // rank 0's clock and stop request
            var last = Step == Options.Steps || status != TrainingStatus.Completed;

            EvaluationResult? validation = null;
            if (last || Due(Options.EvaluateEvery))
            {
                validation = Evaluate(session);
                if (!double.IsFinite(validation.Value.Loss))
                    return Result(session, TrainingStatus.NonFinite, NonFiniteMessage(Invariant($"the validation loss is {validation.Value.Loss} at step {Step}")));
                // An evaluation may ask to stop (e.g. a target reached): stop here, with the weights it judged.
                if (!last && (parallel?.Agree(validation.Value.StopTraining) ?? validation.Value.StopTraining))
                    (status, last) = (TrainingStatus.TargetReached, true);
            }

            Record(session, step, validation, progress);

            if (Options.CheckpointPath is { } path && (last || Due(Options.CheckpointEvery)) && WriteCheckpoint(session, path) is { } notFinite)
                return Result(session, TrainingStatus.NonFinite, NonFiniteMessage(notFinite));

            if (last)
                return Result(session, status, FinalMessage(status));
        }
    }

    /// <inheritdoc/>
    public void Dispose() => Optimizer.Dispose();

    /// <summary>
    /// One optimizer step: zero the gradients, <see cref="TrainerOptions.Accumulate"/> micro-batches
    /// (each dLoss scaled by 1/k), AdamW at the schedule's rate. A non-finite loss stops before the
    /// update, a non-finite gradient norm after it (<see cref="StepOutcome.Failure"/> says which).
    /// </summary>
    private StepOutcome OptimizerStep()
    {
        var scale = 1f / Options.Accumulate;
        Task.Model.ZeroGradients();
        double lossSum = 0;
        long tokens = 0;
        parallel?.BeginStep();
        for (var i = 0; i < microBatchLosses.Length; i++)
        {
            parallel?.BeginMicroBatch(i);
            var micro = Task.TrainMicroBatch(scale);
            lossSum += microBatchLosses[i] = micro.Loss;
            tokens += micro.Tokens;
        }
        if (parallel is not null)
            (lossSum, tokens) = parallel.EndMicroBatches(microBatchLosses, tokens); // gradients summed over the ranks; the global loss
        var loss = lossSum / Options.Accumulate;
        if (!double.IsFinite(loss))
            return new StepOutcome(loss, tokens, 0, 0, Invariant($"the training loss is {loss} at step {Step + 1}"));

        var learningRate = Schedule.At(Step + 1);
        var norm = Optimizer.Step(learningRate, readNorm: true);
        Step++;
        Tokens += tokens;
        return new StepOutcome(loss, tokens, learningRate, norm,
            float.IsFinite(norm) ? null : Invariant($"the gradient norm is {norm} at step {Step}"));
    }

    /// <summary>The task's validation loss in evaluation mode; its duration feeds the time-limit forecast.</summary>
    private EvaluationResult Evaluate(Session session)
    {
        var start = session.Seconds;
        EvaluationResult validation;
        using (Task.Model.EvaluationMode())
            validation = Task.Evaluate();
        session.Forecast.EvaluationTook(session.Seconds - start);
        if (double.IsFinite(validation.Loss))
            LastValidation = validation;
        return validation;
    }

    /// <summary>The step's metrics record: kept, logged, and shown (a line when it was evaluated).</summary>
    private void Record(Session session, StepOutcome step, EvaluationResult? validation, ITrainingProgress? progress)
    {
        var record = new MetricsRecord(Step, Tokens, step.Loss, step.LearningRate, step.Norm, session.Recent.TokensPerSecond, session.Elapsed,
            validation?.Loss, validation?.Perplexity);
        metrics.Add(record);
        logger?.Log(record);
        progress?.Report(new ProgressUpdate(Step, step.Loss, record.TokensPerSecond, LastValidation?.Loss));
        if (validation is { } v)
            progress?.Log(Invariant($"step {Step}: train loss {step.Loss:F4}, validation loss {v.Loss:F4}, perplexity {v.Perplexity:F2}"));
    }

    /// <summary>Writes the checkpoint; its duration feeds the time-limit forecast. Returns why the state could not be saved, or null.</summary>
    private string? WriteCheckpoint(Session session, string path)
    {
        var start = session.Seconds;
        string? notFinite = null;
        try
        {
            if (parallel?.IsRoot ?? true)
                Checkpoint.Save(path, Task, Optimizer, Options, CurrentState(session.Elapsed), checkpointMetadata);
        }
        catch (NonFiniteStateException e)
        {
            notFinite = e.Message;
        }
        if (parallel is not null && parallel.Agree(notFinite is not null) && notFinite is null)
            notFinite = "rank 0 found it so";
        if (notFinite is not null)
            return Invariant($"the model state is not finite after step {Step} ({notFinite})");
        checkpointStep = Step;
        session.Forecast.CheckpointTook(session.Seconds - start);
        return null;
    }

    /// <summary>Is an evaluation or checkpoint every <paramref name="every"/> steps due now (0: only at the end)?</summary>
    private bool Due(int every) => every > 0 && Step % every == 0;

    private string FinalMessage(TrainingStatus status)
    {
        var why = status switch
        {
            TrainingStatus.TimeLimit => Invariant($"Stopped at step {Step} of {Options.Steps}: the time limit {Options.TimeLimit} would be exceeded by another step"),
            TrainingStatus.Cancelled => Invariant($"Stopped at step {Step} of {Options.Steps} on request"),
            TrainingStatus.TargetReached => Invariant($"Stopped at step {Step} of {Options.Steps}: the evaluation reached the task's target"),
            _ => Invariant($"Trained {Step} steps"),
        };
        return why + (checkpointStep == Step ? "; final evaluation and checkpoint done." : "; final evaluation done.");
    }

    private TrainingResult Result(Session session, TrainingStatus status, string message) =>
        new(status, Step, message, LastValidation, session.Elapsed, session.TokensPerSecond, checkpointStep);

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);

    private TrainerState CurrentState(double elapsed) =>
        new(Step, Tokens, elapsed, Task.Model.RandomState, Task.SaveDataState());

    private string NonFiniteMessage(string what)
    {
        var kept = checkpointStep is { } s && Options.CheckpointPath is { } path
            ? string.Create(CultureInfo.InvariantCulture, $" The last good checkpoint (step {s}) is kept at '{path}'.")
            : " No checkpoint was written.";
        return $"Training diverged: {what}. Lower the learning rate (--lr) or raise the warmup (--warmup).{kept}";
    }

    /// <summary>What one optimizer step gave; <paramref name="Failure"/> says what was not finite, or is null.</summary>
    private readonly record struct StepOutcome(double Loss, long Tokens, double LearningRate, float Norm, string? Failure);

    /// <summary>The clocks and counters of one <see cref="Run"/> call (a resumed run starts a new session).</summary>
    private sealed class Session(double elapsedBefore)
    {
        private const int ThroughputSteps = 20;
        private readonly Stopwatch clock = Stopwatch.StartNew();
        private double stepSeconds;
        private long tokens;

        /// <summary>Seconds since this session began.</summary>
        public double Seconds => clock.Elapsed.TotalSeconds;

        /// <summary>Training wall time of all sessions.</summary>
        public double Elapsed => elapsedBefore + Seconds;

        /// <summary>Recent throughput (the metrics records' tokens/s).</summary>
        public ThroughputWindow Recent { get; } = new(ThroughputSteps);

        /// <summary>Will another step, with its evaluation and checkpoint, overrun the time limit?</summary>
        public TimeLimitForecast Forecast { get; } = new();

        /// <summary>This session's throughput over its steps only (evaluations and checkpoints excluded).</summary>
        public double TokensPerSecond => stepSeconds > 0 ? tokens / stepSeconds : 0;

        public void StepDone(long stepTokens, double seconds)
        {
            stepSeconds += seconds;
            tokens += stepTokens;
            Forecast.StepTook(seconds);
            Recent.Add(stepTokens, seconds);
        }
    }
}
