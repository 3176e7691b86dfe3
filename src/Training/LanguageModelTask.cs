using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using GpuTransformer.Kernels;
using GpuTransformer.Layers;
using GpuTransformer.Training.Data;
using GpuTransformer.Training.Distributed;
using GpuTransformer.Training.Tokenizers;

namespace GpuTransformer.Training;

/// <summary>
/// Next-token prediction with the decoder-only <see cref="LanguageModel"/>: training batches are
/// random windows of the training stream (<see cref="LanguageModelBatcher"/>, whose state is the
/// data position), validation is the first <see cref="EvaluationWindows"/> non-overlapping windows
/// of the validation stream (the same windows at every evaluation, so the numbers compare).
/// </summary>
public sealed class LanguageModelTask : IShardableTrainingTask
{
    private readonly TokenizedCorpus corpus;
    private readonly CorpusIdentity corpusIdentity;
    private readonly LanguageModelBatcher batcher;
    private readonly LanguageModelBatch batch;

    /// <param name="model">The model (its max_seq_len must be at least <paramref name="contextLength"/>).</param>
    /// <param name="corpus">Token streams; the model's vocabulary must hold the tokenizer's.</param>
    /// <param name="corpusIdentity">Stored with checkpoints.</param>
    /// <param name="batchSize">B of a micro-batch.</param>
    /// <param name="contextLength">T.</param>
    /// <param name="dataSeed">Seed of the training window draws.</param>
    /// <param name="evaluationWindows">Validation windows per evaluation (0: the whole validation stream).</param>
    /// <exception cref="ArgumentException">The model and the data do not fit together (named).</exception>
    public LanguageModelTask(LanguageModel model, TokenizedCorpus corpus, CorpusIdentity corpusIdentity, int batchSize, int contextLength, ulong dataSeed, int evaluationWindows)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(corpus);
        ArgumentNullException.ThrowIfNull(corpusIdentity);
        ArgumentOutOfRangeException.ThrowIfNegative(evaluationWindows);
        if (contextLength > model.Config.MaxSequenceLength)
            throw new ArgumentException($"Context length {contextLength} exceeds the model's max_seq_len {model.Config.MaxSequenceLength}.", nameof(contextLength));
        if (corpus.Tokenizer.VocabularySize > model.Config.VocabularySize)
            throw new ArgumentException($"The tokenizer has {corpus.Tokenizer.VocabularySize} ids but the model's vocab_size is {model.Config.VocabularySize}.", nameof(corpus));
        if (EvaluationBatches.WindowCount(corpus.Valid.Length, contextLength) == 0)
            throw new ArgumentException($"The validation stream ({corpus.Valid.Length:N0} tokens) is shorter than one window of {contextLength} + 1 tokens; use a smaller --context.", nameof(contextLength));
        Model = model;
        this.corpus = corpus;
        this.corpusIdentity = corpusIdentity;
        batcher = new LanguageModelBatcher(corpus.Train, batchSize, contextLength, dataSeed);
        batch = new LanguageModelBatch(batchSize, contextLength);
        EvaluationWindows = evaluationWindows;
    }

    /// <summary>The language model.</summary>
    public LanguageModel Model { get; }

    IModel ITrainingTask.Model => Model;

    /// <summary>The tokenizer of the streams.</summary>
    public ITokenizer Tokenizer => corpus.Tokenizer;

    /// <summary>B.</summary>
    public int BatchSize => batcher.BatchSize;

    /// <summary>T.</summary>
    public int ContextLength => batcher.ContextLength;

    /// <summary>Validation windows scored per evaluation (0: all).</summary>
    public int EvaluationWindows { get; }

    /// <summary>The batcher's batch number: micro-batch m is <see cref="LanguageModelBatcher"/>'s batch m.</summary>
    public long NextMicroBatch
    {
        get => batcher.Step;
        set => batcher.Restore(batcher.State with { Step = value });
    }

    int IShardableTrainingTask.SequencesPerMicroBatch => BatchSize;

    /// <inheritdoc/>
    public MicroBatchResult TrainMicroBatch(float gradientScale)
    {
        batcher.NextInto(batch);
        return Model.TrainStep(batch.ToModelBatch(), gradientScale);
    }

    /// <inheritdoc/>
    public EvaluationResult Evaluate() =>
        Evaluate(Model, corpus.Valid, BatchSize, ContextLength, EvaluationWindows == 0 ? null : EvaluationWindows);

    /// <summary>
    /// The mean loss per target token of <paramref name="model"/> (in evaluation mode for the call)
    /// over the non-overlapping windows of <paramref name="stream"/> from its start, at most
    /// <paramref name="maxWindows"/> of them (rounded up to whole batches; null: all).
    /// </summary>
    /// <exception cref="ArgumentException">The stream is shorter than one window.</exception>
    public static EvaluationResult Evaluate(LanguageModel model, int[] stream, int batchSize, int contextLength, int? maxWindows = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(stream);
        if (EvaluationBatches.WindowCount(stream.Length, contextLength) == 0)
            throw new ArgumentException($"A stream of {stream.Length:N0} tokens is shorter than one window of {contextLength} + 1 tokens.", nameof(stream));
        int? maxBatches = maxWindows is { } w ? Math.Max(1, (w + batchSize - 1) / batchSize) : null;
        using (model.EvaluationMode())
        {
            double sum = 0;
            long tokens = 0;
            foreach (var b in EvaluationBatches.Sequential(stream, batchSize, contextLength, maxBatches))
            {
                model.Forward(new TokenIds(b.Inputs, b.BatchSize, b.ContextLength));
                var loss = model.Loss(new TokenIds(b.Targets, b.BatchSize, b.ContextLength));
                var counted = model.LossFunction.CountedTargets;
                sum += (double)loss * counted;
                tokens += counted;
            }
            return new EvaluationResult(sum / tokens, tokens);
        }
    }

    /// <inheritdoc/>
    public string SaveDataState()
    {
        var s = batcher.State;
        return JsonSerializer.Serialize(new Dictionary<string, string>
        {
            ["seed"] = s.Seed.ToString(CultureInfo.InvariantCulture),
            ["step"] = s.Step.ToString(CultureInfo.InvariantCulture),
            ["batch_size"] = s.BatchSize.ToString(CultureInfo.InvariantCulture),
            ["context_length"] = s.ContextLength.ToString(CultureInfo.InvariantCulture),
            ["stream_length"] = s.StreamLength.ToString(CultureInfo.InvariantCulture),
        });
    }

    /// <inheritdoc/>
    public void RestoreDataState(string state)
    {
        ArgumentNullException.ThrowIfNull(state);
        try
        {
            var values = JsonSerializer.Deserialize<Dictionary<string, string>>(state) ?? throw new InvalidDataException("The batcher state is empty.");
            long L(string key) => long.Parse(values[key], NumberStyles.Integer, CultureInfo.InvariantCulture);
            batcher.Restore(new BatcherState(
                ulong.Parse(values["seed"], NumberStyles.Integer, CultureInfo.InvariantCulture), L("step"),
                (int)L("batch_size"), (int)L("context_length"), L("stream_length")));
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or FormatException or OverflowException or ArgumentException)
        {
            throw new InvalidDataException($"The saved batcher state does not fit this run's data: {e.Message}", e);
        }
    }

    /// <inheritdoc/>
    public IReadOnlyDictionary<string, string> Metadata() => new Dictionary<string, string>(StringComparer.Ordinal)
    {
        [Checkpoint.TokenizerKey] = TokenizerFactory.ToJson(corpus.Tokenizer),
        [Checkpoint.TokenizerFingerprintKey] = TokenizerFactory.Fingerprint(corpus.Tokenizer),
        [Checkpoint.CorpusKey] = corpusIdentity.ToJson(),
        [Checkpoint.TaskKey] = new LanguageModelTaskSettings(BatchSize, ContextLength, batcher.State.Seed, EvaluationWindows).ToJson(),
    };
}

/// <summary>The data settings of a <see cref="LanguageModelTask"/>, stored in checkpoints under <see cref="Checkpoint.TaskKey"/>.</summary>
/// <param name="BatchSize">B of a micro-batch.</param>
/// <param name="ContextLength">T.</param>
/// <param name="DataSeed">Seed of the training window draws.</param>
/// <param name="EvaluationWindows">Validation windows per evaluation (0: all).</param>
public sealed record LanguageModelTaskSettings(int BatchSize, int ContextLength, ulong DataSeed, int EvaluationWindows)
{
    /// <summary>Compact JSON.</summary>
    public string ToJson() => new JsonObject
    {
        ["kind"] = StateDict.LanguageModelKind,
        ["batch_size"] = BatchSize,
        ["context_length"] = ContextLength,
        ["data_seed"] = DataSeed.ToString(CultureInfo.InvariantCulture),
        ["eval_windows"] = EvaluationWindows,
    }.ToJsonString();

    /// <summary>The settings stored in <paramref name="checkpoint"/>.</summary>
    /// <exception cref="InvalidDataException">Missing or malformed, or not a language-model run.</exception>
    public static LanguageModelTaskSettings Read(CheckpointFile checkpoint)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        var text = checkpoint.Metadata(Checkpoint.TaskKey)
            ?? throw new InvalidDataException($"Checkpoint '{checkpoint.Path}' has no '{Checkpoint.TaskKey}' entry in its metadata.");
        try
        {
            var node = JsonNode.Parse(text)!;
            if (node["kind"]?.GetValue<string>() != StateDict.LanguageModelKind)
                throw new InvalidDataException($"Checkpoint '{checkpoint.Path}' is not a language-model run.");
            return new LanguageModelTaskSettings(
                node["batch_size"]!.GetValue<int>(), node["context_length"]!.GetValue<int>(),
                ulong.Parse(node["data_seed"]!.GetValue<string>(), NumberStyles.None, CultureInfo.InvariantCulture),
                node["eval_windows"]!.GetValue<int>());
        }
        catch (Exception e) when (e is JsonException or FormatException or InvalidOperationException or NullReferenceException or OverflowException)
        {
            throw new InvalidDataException($"Checkpoint '{checkpoint.Path}' has a malformed '{Checkpoint.TaskKey}': {e.Message}", e);
        }
    }
}
