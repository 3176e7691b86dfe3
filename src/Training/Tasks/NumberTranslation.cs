using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Layers.IO;
using GpuTransformer.Layers;
using GpuTransformer.Training.Data;
using GpuTransformer.Training.Generation;
using GpuTransformer.Training.Optimization;
using GpuTransformer.Training.Reporting;

namespace GpuTransformer.Training.Tasks;

/// <summary>Training settings of <see cref="NumberTranslation.Train"/> (mapped onto <see cref="TrainerOptions"/>).</summary>
public sealed record TranslationTrainingOptions
{
    /// <summary>Pairs per step.</summary>
    public int BatchSize { get; init; } = 64;

    /// <summary>Peak learning rate (AdamW), reached after <see cref="WarmupSteps"/>, then cosine decay to a tenth of it at <see cref="MaxSteps"/>.</summary>
    public double LearningRate { get; init; } = 1e-3;

    /// <summary>Linear warmup steps (post-LN needs them).</summary>
    public int WarmupSteps { get; init; } = 100;

    /// <summary>Step limit (also the length of the cosine schedule).</summary>
    public long MaxSteps { get; init; } = 5000;

    /// <summary>Wall-time limit of the training loop.</summary>
    public TimeSpan TimeLimit { get; init; } = TimeSpan.FromMinutes(20);

    /// <summary>Stop once greedy exact match on the held-out check set reaches this (0: at the first check; &gt; 1 never stops early).</summary>
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
        if (!(TargetAccuracy >= 0))
            throw new ArgumentOutOfRangeException(nameof(TargetAccuracy), TargetAccuracy, "The target accuracy must be ≥ 0 (0 stops at the first check).");
        ArgumentOutOfRangeException.ThrowIfLessThan(EvaluateEvery, 1, nameof(EvaluateEvery));
        ArgumentOutOfRangeException.ThrowIfNegative(CheckSize, nameof(CheckSize));
        return this;
    }

    /// <summary>The trainer's options: cosine schedule, AdamW, evaluation cadence, time limit, checkpoint at the end.</summary>
    public TrainerOptions ToTrainerOptions(string? checkpointPath) => new()
    {
        Steps = MaxSteps,
        EvaluateEvery = EvaluateEvery,
        Optimizer = new AdamWOptions { WeightDecay = WeightDecay, MaxGradNorm = MaxGradNorm },
        Schedule = new ScheduleOptions { Kind = ScheduleOptions.Cosine, LearningRate = LearningRate, WarmupSteps = WarmupSteps, MinLearningRate = LearningRate / 10 },
        TimeLimit = TimeLimit,
        CheckpointPath = checkpointPath,
    };
}

/// <summary>What <see cref="NumberTranslation.Train"/> did.</summary>
/// <param name="Result">The trainer's result (steps, status, message, time).</param>
/// <param name="Checks">Every held-out check of this session.</param>
/// <param name="FirstAtTarget">The first check that reached the target accuracy, if any.</param>
public sealed record TranslationTrainingReport(TrainingResult Result, IReadOnlyList<TranslationCheck> Checks, TranslationCheck? FirstAtTarget)
{
    /// <summary>Whether a check reached the target.</summary>
    public bool ReachedTarget => FirstAtTarget is not null;
}

/// <summary>One decoded example.</summary>
public sealed record TranslationExample(string Input, string Expected, string Output, bool Correct);

/// <summary>Exact match of a decoding method over a set of numbers.</summary>
public sealed record TranslationEvaluation(string Method, double Accuracy, int Correct, int Total, TimeSpan Elapsed, IReadOnlyList<TranslationExample> Examples);

/// <summary>
/// The encoder–decoder Transformer on <see cref="NumbersToWordsTask"/>: a default model config,
/// training with <see cref="Trainer"/> (<see cref="NumbersToWordsTrainingTask"/>: AdamW, warmup +
/// cosine, gradient clipping, stopping at a held-out greedy exact match or a step/time limit,
/// checkpoints with exact resume), batched greedy and beam decoding with the key/value cache
/// (<see cref="TransformerScorer"/>), exact-match evaluation, and loading a trained checkpoint.
/// </summary>
public static class NumberTranslation
{
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
    /// Trains <paramref name="model"/> on the task with <see cref="Trainer"/> until the greedy exact
    /// match on the held-out check set reaches the target (the trainer then runs its final
    /// evaluation and checkpoint), or the step or time limit. Checks are logged to
    /// <paramref name="progress"/>. With <paramref name="checkpointPath"/> the trainer writes its
    /// checkpoint there at the end; <paramref name="resumeFrom"/> continues a saved run exactly;
    /// <paramref name="cancellation"/> (Ctrl+C) stops it after the current step with a final evaluation and checkpoint.
    /// </summary>
    public static TranslationTrainingReport Train(Transformer model, NumbersToWordsTask task, TranslationTrainingOptions options,
        ITrainingProgress? progress = null, string? checkpointPath = null, CheckpointFile? resumeFrom = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(task);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var trainingTask = new NumbersToWordsTrainingTask(model, task, options.BatchSize, options.TargetAccuracy, options.CheckSize);
        if (progress is not null)
            trainingTask.Log = progress.Log;
        using var trainer = new Trainer(trainingTask, options.ToTrainerOptions(checkpointPath));
        if (resumeFrom is not null)
        {
            RequireTask(resumeFrom, task);
            trainer.Restore(resumeFrom);
        }
        var result = trainer.Run(progress, cancellation);
        model.Training = false;
        return new TranslationTrainingReport(result, trainingTask.Checks, trainingTask.FirstAtTarget);
    }

    /// <summary>Teacher-forced mean loss per target token (pad ignored) on <paramref name="numbers"/>, in evaluation mode.</summary>
    public static EvaluationResult HeldOutLoss(Transformer model, NumbersToWordsTask task, IReadOnlyList<long> numbers, int batchSize = 128)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(task);
        ArgumentNullException.ThrowIfNull(numbers);
        using (model.EvaluationMode())
        {
            double sum = 0;
            long tokens = 0;
            foreach (var chunk in numbers.Chunk(batchSize))
            {
                var batch = Seq2SeqBatch.Create([.. chunk.Select(task.Pair)], TaskVocabulary.Pad, TaskVocabulary.Bos, TaskVocabulary.Eos);
                model.Forward(new TokenIds(batch.Source, batch.BatchSize, batch.SourceLength), new TokenIds(batch.TargetInput, batch.BatchSize, batch.TargetLength));
                var loss = model.Loss(new TokenIds(batch.TargetOutput, batch.BatchSize, batch.TargetLength));
                var counted = model.LossFunction.CountedTargets;
                sum += (double)loss * counted;
                tokens += counted;
            }
            return new EvaluationResult(sum / Math.Max(tokens, 1), tokens);
        }
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

    /// <summary>
    /// The task's description stored in checkpoints under <see cref="Checkpoint.TaskKey"/>:
    /// {"name": "numbers-to-words", "options": {…}, "batch_size": B, "source_vocabulary": […], "target_vocabulary": […]}.
    /// </summary>
    public static string TaskDescription(NumbersToWordsTask task, int batchSize)
    {
        ArgumentNullException.ThrowIfNull(task);
        return new JsonObject
        {
            ["name"] = NumbersToWordsTask.Name,
            ["options"] = JsonNode.Parse(task.Options.ToJson()),
            ["batch_size"] = batchSize,
            ["source_vocabulary"] = JsonNode.Parse(task.Source.ToJson()),
            ["target_vocabulary"] = JsonNode.Parse(task.Target.ToJson()),
        }.ToJsonString();
    }

    /// <summary>The task a checkpoint was trained on (from its <see cref="Checkpoint.TaskKey"/> description).</summary>
    /// <exception cref="InvalidDataException">Not a numbers-to-words checkpoint, or vocabularies that differ from this build's task.</exception>
    public static NumbersToWordsTask ReadTask(CheckpointFile checkpoint)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        var text = checkpoint.Metadata(Checkpoint.TaskKey);
        NumbersToWordsTask task;
        try
        {
            var node = text is null ? null : JsonNode.Parse(text);
            if (node?["name"]?.GetValue<string>() != NumbersToWordsTask.Name)
                throw new InvalidDataException($"'{checkpoint.Path}' is not a {NumbersToWordsTask.Name} checkpoint (it holds a '{checkpoint.ModelKind}' model{(node?["name"] is { } n ? $" of task '{n}'" : "")}).");
            task = new NumbersToWordsTask(NumbersToWordsOptions.FromJson(node["options"]!.ToJsonString()));
            if (!task.Source.Matches(node["source_vocabulary"]!.ToJsonString()) || !task.Target.Matches(node["target_vocabulary"]!.ToJsonString()))
                throw new InvalidDataException($"'{checkpoint.Path}' was written with other vocabularies than this build's {NumbersToWordsTask.Name} task.");
        }
        catch (Exception e) when (e is JsonException or FormatException or InvalidOperationException or NullReferenceException)
        {
            throw new InvalidDataException($"'{checkpoint.Path}' has a malformed task description: {e.Message}", e);
        }
        return task;
    }

    /// <summary>Loads a translate checkpoint (written by <see cref="Train"/>): its task and its model on <paramref name="device"/>, in evaluation mode.</summary>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="InvalidDataException">Not a numbers-to-words checkpoint, or one that does not fit.</exception>
    public static (Transformer Model, NumbersToWordsTask Task, CheckpointFile Checkpoint) Load(ComputeDevice device, string path)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(path);
        var checkpoint = Checkpoint.Read(path);
        var task = ReadTask(checkpoint);
        var model = new Transformer(device, checkpoint.TransformerConfig());
        try
        {
            RequireMatches(model, task);
            checkpoint.LoadModel(model);
        }
        catch
        {
            model.Dispose();
            throw;
        }
        model.Training = false;
        return (model, task, checkpoint);
    }

    /// <summary>Throws unless <paramref name="checkpoint"/> was trained on exactly <paramref name="task"/> (options and vocabularies).</summary>
    private static void RequireTask(CheckpointFile checkpoint, NumbersToWordsTask task)
    {
        var saved = ReadTask(checkpoint);
        if (saved.Options != task.Options)
            throw new InvalidDataException($"'{checkpoint.Path}' was trained on {saved.Options.ToJson()}, not {task.Options.ToJson()}: resume with the same task options.");
    }

    /// <summary>Throws an ArgumentException unless the model's vocabularies, pad id and max_seq_len fit the task.</summary>
    internal static void RequireMatches(Transformer model, NumbersToWordsTask task)
    {
        var c = model.Config;
        if (c.SourceVocabularySize != task.Source.Size || c.TargetVocabularySize != task.Target.Size || c.PadId != TaskVocabulary.Pad)
            throw new ArgumentException($"The model's vocabularies ({c.SourceVocabularySize} source, {c.TargetVocabularySize} target, pad {c.PadId}) are not the task's ({task.Source.Size}, {task.Target.Size}, pad {TaskVocabulary.Pad}).", nameof(model));
        if (c.MaxSequenceLength < Math.Max(task.MaxSourceLength, task.MaxTargetLength + 1))
            throw new ArgumentException($"max_seq_len {c.MaxSequenceLength} is shorter than the task's longest sequence ({Math.Max(task.MaxSourceLength, task.MaxTargetLength + 1)}).", nameof(model));
    }
}
