using System.Globalization;
using System.Text.Json.Nodes;
using GpuTransformer.Training.Optimization;
using GpuTransformer.Training.Schedules;

namespace GpuTransformer.Training;

/// <summary>
/// The learning-rate schedule as data (stored in checkpoints): <c>cosine</c> — linear warmup to
/// <see cref="LearningRate"/> over <see cref="WarmupSteps"/>, cosine decay to
/// <see cref="MinLearningRate"/> at the last step (<see cref="WarmupCosineSchedule"/>); or
/// <c>inverse_sqrt</c> — the paper's schedule scaled so that it peaks at <see cref="LearningRate"/>
/// at the end of the warmup, lr(s) = lr · min(s/w, √(w/s)) (<see cref="InverseSqrtSchedule"/>).
/// </summary>
public sealed record ScheduleOptions
{
    /// <summary>Warmup then cosine decay.</summary>
    public const string Cosine = "cosine";

    /// <summary>Warmup then 1/√step decay (the paper's).</summary>
    public const string InverseSqrt = "inverse_sqrt";

    /// <summary><see cref="Cosine"/> or <see cref="InverseSqrt"/>.</summary>
    public string Kind { get; init; } = Cosine;

    /// <summary>The peak learning rate, reached at the end of the warmup.</summary>
    public double LearningRate { get; init; } = 1e-3;

    /// <summary>Warmup steps (linear from lr/w at step 1 to lr at step w).</summary>
    public long WarmupSteps { get; init; } = 100;

    /// <summary>The cosine schedule's final learning rate.</summary>
    public double MinLearningRate { get; init; }

    /// <summary>
    /// The steps the cosine decay spans; null: the run's steps. Set when a resumed run is given another
    /// <c>--steps</c>: the schedule stays the one the run started with (constant at
    /// <see cref="MinLearningRate"/> after it), so the learning rate never jumps.
    /// </summary>
    public long? TotalSteps { get; init; }

    /// <summary>Throws an ArgumentException naming the first bad value.</summary>
    public ScheduleOptions Validate()
    {
        if (Kind is not (Cosine or InverseSqrt))
            throw new ArgumentException($"Unknown schedule '{Kind}'. Known: {Cosine}, {InverseSqrt}.");
        if (!(LearningRate > 0) || !double.IsFinite(LearningRate))
            throw new ArgumentException($"The learning rate must be positive, got {LearningRate}.");
        if (WarmupSteps < 0 || (Kind == InverseSqrt && WarmupSteps == 0))
            throw new ArgumentException($"Warmup steps must be ≥ {(Kind == InverseSqrt ? 1 : 0)} for the {Kind} schedule, got {WarmupSteps}.");
        if (!(MinLearningRate >= 0 && MinLearningRate <= LearningRate))
            throw new ArgumentException($"The minimum learning rate must be in [0, lr = {LearningRate}], got {MinLearningRate}.");
        if (TotalSteps is < 1)
            throw new ArgumentException($"The schedule's length must be ≥ 1 step, got {TotalSteps}.");
        return this;
    }

    /// <summary>The schedule of a run of <paramref name="totalSteps"/> optimizer steps.</summary>
    public ILearningRateSchedule Create(long totalSteps)
    {
        Validate();
        totalSteps = TotalSteps ?? totalSteps;
        return Kind == Cosine
            ? new WarmupCosineSchedule(LearningRate, Math.Min(WarmupSteps, totalSteps), totalSteps, MinLearningRate)
            : new InverseSqrtSchedule(1, WarmupSteps, LearningRate * Math.Sqrt(WarmupSteps));
    }

    /// <summary>One line for logs.</summary>
    public string Describe(long totalSteps)
    {
        var decay = TotalSteps ?? totalSteps;
        return Kind == Cosine
            ? string.Create(CultureInfo.InvariantCulture, $"warmup {Math.Min(WarmupSteps, decay)} steps to lr {LearningRate:G3}, cosine to {MinLearningRate:G3} at step {decay}")
                + (decay < totalSteps ? string.Create(CultureInfo.InvariantCulture, $" (the run's original length), then constant to step {totalSteps}") : "")
            : string.Create(CultureInfo.InvariantCulture, $"warmup {WarmupSteps} steps to lr {LearningRate:G3}, then lr·√({WarmupSteps}/step)");
    }

    internal JsonObject ToJson() => new()
    {
        ["kind"] = Kind,
        ["lr"] = LearningRate,
        ["warmup"] = WarmupSteps,
        ["min_lr"] = MinLearningRate,
        ["total_steps"] = TotalSteps,
    };

    internal static ScheduleOptions FromJson(JsonNode node) => new ScheduleOptions
    {
        Kind = node["kind"]!.GetValue<string>(),
        LearningRate = node["lr"]!.GetValue<double>(),
        WarmupSteps = node["warmup"]!.GetValue<long>(),
        MinLearningRate = node["min_lr"]!.GetValue<double>(),
        TotalSteps = node["total_steps"]?.GetValue<long>(),
    }.Validate();
}

/// <summary>How <see cref="Trainer"/> runs. Everything but the paths and the time limit is stored in checkpoints.</summary>
public sealed record TrainerOptions
{
    /// <summary>Optimizer steps of the whole run (a resumed run counts the steps already done).</summary>
    public long Steps { get; init; } = 1000;

    /// <summary>Micro-batches per optimizer step (gradient accumulation); the step's gradient is their mean.</summary>
    public int Accumulate { get; init; } = 1;

    /// <summary>AdamW's hyper-parameters and gradient clipping.</summary>
    public AdamWOptions Optimizer { get; init; } = new() { MaxGradNorm = 1.0 };

    /// <summary>The learning-rate schedule.</summary>
    public ScheduleOptions Schedule { get; init; } = new();

    /// <summary>Evaluate every this many steps (0: only at the end); the last step always evaluates.</summary>
    public int EvaluateEvery { get; init; } = 100;

    /// <summary>Write a checkpoint every this many steps (0: only at the end); the last step always writes one when <see cref="CheckpointPath"/> is set.</summary>
    public int CheckpointEvery { get; init; }

    /// <summary>The checkpoint file (overwritten atomically each time); null: no checkpoints.</summary>
    public string? CheckpointPath { get; init; }

    /// <summary>
    /// Wall-clock budget of <see cref="Trainer.Run"/>: training stops early (status
    /// <see cref="TrainingStatus.TimeLimit"/>) when the next step, the final evaluation and the
    /// final checkpoint would not fit in it. Null: none.
    /// </summary>
    public TimeSpan? TimeLimit { get; init; }

    /// <summary>Throws an ArgumentException naming the first bad value.</summary>
    public TrainerOptions Validate()
    {
        if (Steps < 1)
            throw new ArgumentException($"Steps must be ≥ 1, got {Steps}.");
        if (Accumulate < 1)
            throw new ArgumentException($"Gradient accumulation must be ≥ 1 micro-batch per step, got {Accumulate}.");
        if (EvaluateEvery < 0 || CheckpointEvery < 0)
            throw new ArgumentException($"Evaluation and checkpoint intervals must be ≥ 0 (0: only at the end), got {EvaluateEvery} and {CheckpointEvery}.");
        if (TimeLimit is { } limit && limit <= TimeSpan.Zero)
            throw new ArgumentException($"The time limit must be positive, got {limit}.");
        ArgumentNullException.ThrowIfNull(Optimizer);
        if (!(Optimizer.MaxGradNorm > 0))
            throw new ArgumentException($"The gradient clipping norm must be positive (or +∞ for none), got {Optimizer.MaxGradNorm}.");
        Schedule.Validate();
        return this;
    }

    /// <summary>The stored part as JSON: steps, accumulate, intervals, optimizer, schedule.</summary>
    internal JsonObject ToJson() => new()
    {
        ["steps"] = Steps,
        ["accumulate"] = Accumulate,
        ["eval_every"] = EvaluateEvery,
        ["checkpoint_every"] = CheckpointEvery,
        ["optimizer"] = new JsonObject
        {
            ["beta1"] = Optimizer.Beta1,
            ["beta2"] = Optimizer.Beta2,
            ["eps"] = Optimizer.Epsilon,
            ["weight_decay"] = Optimizer.WeightDecay,
            ["max_grad_norm"] = double.IsFinite(Optimizer.MaxGradNorm) ? Optimizer.MaxGradNorm : null,
        },
        ["schedule"] = Schedule.ToJson(),
    };

    internal static TrainerOptions FromJson(JsonNode node)
    {
        var optimizer = node["optimizer"]!;
        return new TrainerOptions
        {
            Steps = node["steps"]!.GetValue<long>(),
            Accumulate = node["accumulate"]!.GetValue<int>(),
            EvaluateEvery = node["eval_every"]!.GetValue<int>(),
            CheckpointEvery = node["checkpoint_every"]!.GetValue<int>(),
            Optimizer = new AdamWOptions
            {
                Beta1 = optimizer["beta1"]!.GetValue<double>(),
                Beta2 = optimizer["beta2"]!.GetValue<double>(),
                Epsilon = optimizer["eps"]!.GetValue<double>(),
                WeightDecay = optimizer["weight_decay"]!.GetValue<double>(),
                MaxGradNorm = optimizer["max_grad_norm"]?.GetValue<double>() ?? double.PositiveInfinity,
            },
            Schedule = ScheduleOptions.FromJson(node["schedule"]!),
        };
    }
}
