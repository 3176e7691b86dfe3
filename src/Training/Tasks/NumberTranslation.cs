using System.Diagnostics;
using System.Globalization;
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Kernels.IO;
using GpuTransformer.Layers;
using GpuTransformer.Training.Generation;
using GpuTransformer.Training.Optimization;
using GpuTransformer.Training.Reporting;

namespace GpuTransformer.Training.Tasks;

/// <summary>Training settings of <see cref="NumberTranslation.Train"/>.</summary>
public sealed record TranslationTrainingOptions
{
    /// <summary>Pairs per step.</summary>
    public int BatchSize { get; init; } = 64;

    /// <summary>Peak learning rate (AdamW), reached after <see cref="WarmupSteps"/> and kept (stopping early is the point).</summary>
    public double LearningRate { get; init; } = 1e-3;

    /// <summary>Linear warmup steps (post-LN needs them).</summary>
    public int WarmupSteps { get; init; } = 100;

    /// <summary>Step limit.</summary>
    public long MaxSteps { get; init; } = 5000;

    /// <summary>Wall-time limit (checked after each step).</summary>
    public TimeSpan TimeLimit { get; init; } = TimeSpan.FromMinutes(20);

    /// <summary>Stop once greedy exact match on the held-out check set reaches this (≥ 1 never stops early).</summary>
    public double TargetAccuracy { get; init; } = 0.95;

    /// <summary>Steps between held-out checks.</summary>
    public int EvaluateEvery { get; init; } = 100;

    /// <summary>Held-out numbers in each check during training (the first ones of the evaluation set; 0: all).</summary>
    public int CheckSize { get; init; }

    /// <summary>Global gradient-norm clip.</summary>
    public double MaxGradNorm { get; init; } = 1.0;

    /// <summary>AdamW weight decay.</summary>
    public double WeightDecay { get; init; } = 0.01;

    /// <summary>Returns this after checking the fields.</summary>
    public TranslationTrainingOptions Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(BatchSize, 1, nameof(BatchSize));
        if (!(LearningRate > 0) || !double.IsFinite(LearningRate))
            throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "The learning rate must be positive.");
        ArgumentOutOfRangeException.ThrowIfNegative(WarmupSteps, nameof(WarmupSteps));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxSteps, 1, nameof(MaxSteps));
        if (TimeLimit <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(TimeLimit), TimeLimit, "The time limit must be positive.");
        if (!(TargetAccuracy > 0))
            throw new ArgumentOutOfRangeException(nameof(TargetAccuracy), TargetAccuracy, "The target accuracy must be positive.");
        ArgumentOutOfRangeException.ThrowIfLessThan(EvaluateEvery, 1, nameof(EvaluateEvery));
        ArgumentOutOfRangeException.ThrowIfNegative(CheckSize, nameof(CheckSize));
        return this;
    }
}

/// <summary>One held-out check during training.</summary>
public readonly record struct TranslationCheck(long Step, TimeSpan Elapsed, double Loss, double Accuracy);

/// <summary>What <see cref="NumberTranslation.Train"/> did.</summary>
/// <param name="Steps">Steps taken.</param>
/// <param name="Elapsed">Wall time of the loop (checks included).</param>
/// <param name="ReachedTarget">Whether a check reached the target accuracy.</param>
/// <param name="StepsToTarget">Steps when it did.</param>
/// <param name="TimeToTarget">Wall time when it did.</param>
/// <param name="Checks">Every held-out check.</param>
/// <param name="StoppedBy">"target", "steps" or "time".</param>
public sealed record TranslationTrainingReport(
    long Steps, TimeSpan Elapsed, bool ReachedTarget, long? StepsToTarget, TimeSpan? TimeToTarget, IReadOnlyList<TranslationCheck> Checks, string StoppedBy);

/// <summary>One decoded example.</summary>
public sealed record TranslationExample(string Input, string Expected, string Output, bool Correct);

/// <summary>Exact match of a decoding method over a set of numbers.</summary>
public sealed record TranslationEvaluation(string Method, double Accuracy, int Correct, int Total, TimeSpan Elapsed, IReadOnlyList<TranslationExample> Examples);

/// <summary>
/// The encoder–decoder Transformer on <see cref="NumbersToWordsTask"/>: a default model config,
/// a minimal training loop (AdamW, warmup then constant learning rate, gradient clipping,
/// stopping at a held-out greedy exact match or a step/time limit), batched greedy and beam
/// decoding with the key/value cache (<see cref="TransformerScorer"/>), exact-match evaluation,
/// and checkpoints (StateDict + task metadata).
/// </summary>
public static class NumberTranslation
{
    /// <summary>Checkpoint metadata key of the task name.</summary>
    public const string TaskKey = "task";

    /// <summary>Checkpoint metadata key of the task options (JSON).</summary>
    public const string TaskOptionsKey = "task_options";

    /// <summary>Checkpoint metadata key of the source vocabulary (JSON list).</summary>
    public const string SourceVocabularyKey = "source_vocabulary";

    /// <summary>Checkpoint metadata key of the target vocabulary (JSON list).</summary>
    public const string TargetVocabularyKey = "target_vocabulary";

    /// <summary>
    /// The small default model: d_model 64, 4 heads, 2 + 2 layers, feed-forward 256, ReLU,
    /// no dropout (the task has unlimited fresh data), post-LN as in the paper unless
    /// <paramref name="normFirst"/>; vocabularies and max_seq_len from the task, pad_id 0.
    /// </summary>
    public static TransformerConfig DefaultConfig(NumbersToWordsTask task, bool normFirst = false)
    {
        ArgumentNullException.ThrowIfNull(task);
        return new TransformerConfig
        {
            DModel = 64,
            NHead = 4,
            NumEncoderLayers = 2,
            NumDecoderLayers = 2,
            DimFeedforward = 256,
            Dropout = 0f,
            Activation = "relu",
            NormFirst = normFirst,
            SourceVocabularySize = task.Source.Size,
            TargetVocabularySize = task.Target.Size,
            MaxSequenceLength = Math.Max(task.MaxSourceLength, task.MaxTargetLength + 1),
            PadId = TaskVocabulary.Pad,
        }.Validate();
    }

    /// <summary>
    /// Trains <paramref name="model"/> on the task until the greedy exact match on the held-out
    /// check set reaches the target, or a step or time limit. Each check line goes to
    /// <paramref name="progress"/>'s log.
    /// </summary>
    public static TranslationTrainingReport Train(Transformer model, NumbersToWordsTask task, TranslationTrainingOptions options, ITrainingProgress? progress = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(task);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        RequireMatches(model, task);
        var check = options.CheckSize == 0 ? task.EvaluationNumbers : task.EvaluationNumbers.Take(options.CheckSize).ToList();
        using var optimizer = new AdamWOptimizer(model.Parameters(), new AdamWOptions { WeightDecay = options.WeightDecay, MaxGradNorm = options.MaxGradNorm });
        var checks = new List<TranslationCheck>();
        var clock = Stopwatch.StartNew();
        long? stepsToTarget = null;
        TimeSpan? timeToTarget = null;
        var stoppedBy = "steps";
        var tokens = 0L;
        var lossSum = 0.0;
        var lossCount = 0;
        long step = 0;
        while (step < options.MaxSteps)
        {
            model.Training = true;
            var batch = task.TrainingBatch(step, options.BatchSize);
            model.ZeroGradients();
            var loss = model.TrainStep(
                new TokenIds(batch.Source, batch.BatchSize, batch.SourceLength),
                new TokenIds(batch.TargetInput, batch.BatchSize, batch.TargetLength),
                new TokenIds(batch.TargetOutput, batch.BatchSize, batch.TargetLength));
            step++;
            var rate = options.LearningRate * Math.Min(1.0, options.WarmupSteps == 0 ? 1.0 : (double)step / options.WarmupSteps);
            optimizer.Step(rate);
            tokens += batch.TargetTokenCount;
            lossSum += loss;
            lossCount++;
            progress?.Report(new ProgressUpdate(step, loss, tokens / Math.Max(clock.Elapsed.TotalSeconds, 1e-9)));

            var timeUp = clock.Elapsed >= options.TimeLimit;
            if (step % options.EvaluateEvery == 0 || step == options.MaxSteps || timeUp)
            {
                var evaluation = Evaluate(model, task, check, beamWidth: 1, maxExamples: 0);
                var meanLoss = lossSum / Math.Max(lossCount, 1);
                checks.Add(new TranslationCheck(step, clock.Elapsed, meanLoss, evaluation.Accuracy));
                lossSum = 0;
                lossCount = 0;
                progress?.Log(string.Create(CultureInfo.InvariantCulture,
                    $"step {step}: loss {meanLoss:F4}, held-out greedy exact match {evaluation.Accuracy:P1} ({evaluation.Correct}/{evaluation.Total}), {clock.Elapsed.TotalSeconds:F0} s"));
                if (evaluation.Accuracy >= options.TargetAccuracy)
                {
                    stepsToTarget = step;
                    timeToTarget = clock.Elapsed;
                    stoppedBy = "target";
                    break;
                }
            }
            if (timeUp)
            {
                stoppedBy = "time";
                break;
            }
        }
        model.Training = false;
        return new TranslationTrainingReport(step, clock.Elapsed, stepsToTarget is not null, stepsToTarget, timeToTarget, checks, stoppedBy);
    }

    /// <summary>
    /// Decodes source id sequences with greedy decoding (<paramref name="beamWidth"/> 1) or beam
    /// search, <paramref name="batchSize"/> sources per batch; returns the best hypothesis of each.
    /// </summary>
    public static Hypothesis[] Decode(Transformer model, IReadOnlyList<int[]> sources, int maxSteps, int beamWidth = 1, double lengthPenalty = 0.6, int batchSize = 128)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(sources);
        ArgumentOutOfRangeException.ThrowIfLessThan(beamWidth, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        var results = new List<Hypothesis>(sources.Count);
        int[] banned = [TaskVocabulary.Pad, TaskVocabulary.Bos];
        var perBatch = Math.Max(1, batchSize / beamWidth);
        for (var first = 0; first < sources.Count; first += perBatch)
        {
            var chunk = sources.Skip(first).Take(perBatch).ToList();
            using var scorer = new TransformerScorer(model, chunk, beamWidth, maxSteps);
            results.AddRange(beamWidth == 1
                ? SequenceDecoding.Greedy(scorer, TaskVocabulary.Bos, TaskVocabulary.Eos, banned)
                : SequenceDecoding.BeamSearch(scorer, chunk.Count, new BeamSearchOptions { Width = beamWidth, LengthPenalty = lengthPenalty }, TaskVocabulary.Bos, TaskVocabulary.Eos, banned));
        }
        return [.. results];
    }

    /// <summary>Translates digit strings ("4072") to words.</summary>
    /// <exception cref="ArgumentException">An input that is not a number of at most D digits.</exception>
    public static string[] Translate(Transformer model, NumbersToWordsTask task, IReadOnlyList<string> inputs, int beamWidth = 1, double lengthPenalty = 0.6)
    {
        ArgumentNullException.ThrowIfNull(task);
        ArgumentNullException.ThrowIfNull(inputs);
        var sources = inputs.Select(task.EncodeSource).ToList();
        return [.. Decode(model, sources, task.MaxTargetLength + 1, beamWidth, lengthPenalty).Select(h => task.DecodeTarget(h.Tokens))];
    }

    /// <summary>Exact match (whole word sequence) of greedy (width 1) or beam decoding on <paramref name="numbers"/>; keeps the first <paramref name="maxExamples"/> examples.</summary>
    public static TranslationEvaluation Evaluate(Transformer model, NumbersToWordsTask task, IReadOnlyList<long> numbers, int beamWidth = 1, double lengthPenalty = 0.6, int maxExamples = 10)
    {
        ArgumentNullException.ThrowIfNull(task);
        ArgumentNullException.ThrowIfNull(numbers);
        if (numbers.Count == 0)
            throw new ArgumentException("No numbers to evaluate.", nameof(numbers));
        RequireMatches(model, task);
        var clock = Stopwatch.StartNew();
        var outputs = Decode(model, [.. numbers.Select(n => task.EncodeSource(n))], task.MaxTargetLength + 1, beamWidth, lengthPenalty);
        var correct = 0;
        var examples = new List<TranslationExample>();
        for (var i = 0; i < numbers.Count; i++)
        {
            var expected = NumberWords.ToText(numbers[i]);
            var output = task.DecodeTarget(outputs[i].Tokens);
            var ok = output == expected;
            correct += ok ? 1 : 0;
            if (examples.Count < maxExamples)
                examples.Add(new TranslationExample(numbers[i].ToString(CultureInfo.InvariantCulture), expected, output, ok));
        }
        var method = beamWidth == 1 ? "greedy" : string.Create(CultureInfo.InvariantCulture, $"beam {beamWidth}");
        return new TranslationEvaluation(method, (double)correct / numbers.Count, correct, numbers.Count, clock.Elapsed, examples);
    }

    /// <summary>Saves the model with the task's name, options and vocabularies in the metadata (atomic write).</summary>
    public static void Save(Transformer model, NumbersToWordsTask task, string path, IReadOnlyDictionary<string, string>? extra = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(task);
        var metadata = new Dictionary<string, string>(extra ?? new Dictionary<string, string>())
        {
            [TaskKey] = NumbersToWordsTask.Name,
            [TaskOptionsKey] = task.Options.ToJson(),
            [SourceVocabularyKey] = task.Source.ToJson(),
            [TargetVocabularyKey] = task.Target.ToJson(),
        };
        var folder = Path.GetDirectoryName(Path.GetFullPath(path));
        if (folder is not null)
            Directory.CreateDirectory(folder);
        StateDict.Save(model, path, model.Config, metadata);
    }

    /// <summary>Loads a checkpoint written by <see cref="Save"/>: the task (from its options) and the model on <paramref name="device"/>.</summary>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="InvalidDataException">Not a checkpoint of this task, or its vocabularies differ from the task's.</exception>
    public static (Transformer Model, NumbersToWordsTask Task, SafeTensorFile File) Load(ComputeDevice device, string path)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path))
            throw new FileNotFoundException($"Checkpoint '{path}' does not exist. Train one with 'gpu-transformer translate --checkpoint {path}'.", path);
        var file = SafeTensors.Read(path);
        if (!file.Metadata.TryGetValue(TaskKey, out var name) || name != NumbersToWordsTask.Name)
            throw new InvalidDataException($"'{path}' is not a {NumbersToWordsTask.Name} checkpoint (its metadata has task '{name ?? "none"}').");
        NumbersToWordsTask task;
        try
        {
            task = new NumbersToWordsTask(NumbersToWordsOptions.FromJson(file.Metadata.GetValueOrDefault(TaskOptionsKey) ?? "null"));
        }
        catch (FormatException e)
        {
            throw new InvalidDataException($"'{path}': {e.Message}", e);
        }
        if (!task.Source.Matches(file.Metadata.GetValueOrDefault(SourceVocabularyKey) ?? "") || !task.Target.Matches(file.Metadata.GetValueOrDefault(TargetVocabularyKey) ?? ""))
            throw new InvalidDataException($"'{path}' was written with other vocabularies than this build's {NumbersToWordsTask.Name} task.");
        var model = new Transformer(device, StateDict.ReadTransformerConfig(file));
        try
        {
            RequireMatches(model, task);
            StateDict.Load(model, file);
        }
        catch
        {
            model.Dispose();
            throw;
        }
        model.Training = false;
        return (model, task, file);
    }

    private static void RequireMatches(Transformer model, NumbersToWordsTask task)
    {
        var c = model.Config;
        if (c.SourceVocabularySize != task.Source.Size || c.TargetVocabularySize != task.Target.Size || c.PadId != TaskVocabulary.Pad)
            throw new ArgumentException($"The model's vocabularies ({c.SourceVocabularySize} source, {c.TargetVocabularySize} target, pad {c.PadId}) are not the task's ({task.Source.Size}, {task.Target.Size}, pad {TaskVocabulary.Pad}).", nameof(model));
        if (c.MaxSequenceLength < Math.Max(task.MaxSourceLength, task.MaxTargetLength + 1))
            throw new ArgumentException($"max_seq_len {c.MaxSequenceLength} is shorter than the task's longest sequence ({Math.Max(task.MaxSourceLength, task.MaxTargetLength + 1)}).", nameof(model));
    }
}
