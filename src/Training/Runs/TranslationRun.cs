using GpuTransformer.Kernels.Backends;
using GpuTransformer.Layers;
using GpuTransformer.Training.Reporting;
using GpuTransformer.Training.Tasks;

namespace GpuTransformer.Training.Runs;

/// <summary>Everything a translation run is made of (a new run; on resume the checkpoint's task and model win).</summary>
/// <param name="Task">The numbers-to-words task's options.</param>
/// <param name="Model">The encoder–decoder's config (vocabularies and max_seq_len of the task; see <see cref="NumberTranslation.DefaultConfig"/>).</param>
/// <param name="Training">Batch, schedule, limits, target accuracy, check cadence.</param>
/// <param name="Seed">Seed of the model's initialisation.</param>
/// <param name="RunFolder">Run folder (the checkpoint is <see cref="Checkpoint.FileName"/> in it); null: <see cref="TranslationRun.DefaultRunFolder"/>, or on resume the checkpoint file itself.</param>
public sealed record TranslationRunSettings(NumbersToWordsOptions Task, TransformerConfig Model, TranslationTrainingOptions Training, int Seed, string? RunFolder = null);

/// <summary>
/// A translation run as <c>translate</c> does it, callable from C#: <see cref="Start"/> builds the
/// task and the encoder–decoder (or, on resume, reads both from the checkpoint);
/// <see cref="Train"/> trains until the held-out greedy exact match reaches the target, a step or
/// time limit, or a cancellation, reporting through <see cref="ITrainingProgress"/> and
/// checkpointing into the run folder; <see cref="Evaluate(int, double, int)"/> scores greedy and beam decoding on the
/// held-out set. Printing is the caller's.
/// </summary>
public sealed class TranslationRun : IDisposable
{
    /// <summary>The run folder of a new run unless one is given.</summary>
    public static readonly string DefaultRunFolder = Path.Combine(LanguageModelRun.RunsFolder, "translate");

    private readonly CheckpointFile? resumeFrom;

    private TranslationRun(TranslationRunSettings settings, NumbersToWordsTask task, Transformer model, string checkpointPath, CheckpointFile? resumeFrom)
    {
        Settings = settings;
        Task = task;
        Model = model;
        CheckpointPath = checkpointPath;
        this.resumeFrom = resumeFrom;
    }

    /// <summary>The settings (on resume, with the checkpoint's task and model config).</summary>
    public TranslationRunSettings Settings { get; }

    /// <summary>The task.</summary>
    public NumbersToWordsTask Task { get; }

    /// <summary>The encoder–decoder.</summary>
    public Transformer Model { get; }

    /// <summary>Where the trainer writes its checkpoint.</summary>
    public string CheckpointPath { get; }

    /// <summary>The step the run continues from (0 for a new run).</summary>
    public long ResumedStep => resumeFrom?.Step ?? 0;

    /// <summary>Prepares the run. On resume the task and the model's shape come from <paramref name="resumeFrom"/>; the run continues in its folder unless the settings name one.</summary>
    /// <exception cref="ArgumentException">The config does not fit the task.</exception>
    public static TranslationRun Start(ComputeDevice device, TranslationRunSettings settings, CheckpointFile? resumeFrom = null)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(settings);
        settings.Training.Validate();
        var task = resumeFrom is null ? new NumbersToWordsTask(settings.Task) : NumberTranslation.ReadTask(resumeFrom);
        var config = resumeFrom?.TransformerConfig() ?? settings.Model.Validate();
        // A resumed run writes back to the file it continues, unless a run folder is named.
        var checkpointPath = Path.GetFullPath(settings.RunFolder is null && resumeFrom is not null
            ? resumeFrom.Path
            : Path.Combine(settings.RunFolder ?? DefaultRunFolder, Checkpoint.FileName));
        settings = settings with { Task = task.Options, Model = config, RunFolder = Path.GetDirectoryName(checkpointPath) };
        var model = new Transformer(device, config, settings.Seed);
        return new TranslationRun(settings, task, model, checkpointPath, resumeFrom);
    }

    /// <summary>Trains (see <see cref="NumberTranslation.Train"/>); the model is left in evaluation mode.</summary>
    public TranslationTrainingReport Train(ITrainingProgress? progress = null, CancellationToken cancellation = default) =>
        NumberTranslation.Train(Model, Task, Settings.Training, progress, CheckpointPath, resumeFrom, cancellation);

    /// <summary>Greedy exact match on the held-out set (with up to <paramref name="examples"/> examples), then beam search when <paramref name="beamWidth"/> &gt; 1.</summary>
    public IReadOnlyList<TranslationEvaluation> Evaluate(int beamWidth, double lengthPenalty, int examples) =>
        Evaluate(Model, Task, beamWidth, lengthPenalty, examples);

    /// <summary>Greedy exact match of <paramref name="model"/> on the held-out set, then beam search when <paramref name="beamWidth"/> &gt; 1 (also for a loaded checkpoint).</summary>
    public static IReadOnlyList<TranslationEvaluation> Evaluate(Transformer model, NumbersToWordsTask task, int beamWidth, double lengthPenalty, int examples)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(task);
        var greedy = NumberTranslation.Evaluate(model, task, task.EvaluationNumbers, beamWidth: 1, maxExamples: examples);
        return beamWidth > 1
            ? [greedy, NumberTranslation.Evaluate(model, task, task.EvaluationNumbers, beamWidth, lengthPenalty, maxExamples: 0)]
            : [greedy];
    }

    /// <inheritdoc/>
    public void Dispose() => Model.Dispose();
}
