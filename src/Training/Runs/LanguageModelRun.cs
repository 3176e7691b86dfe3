using System.Text;
using System.Text.Json.Nodes;
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Layers;
using GpuTransformer.Training.Data;
using GpuTransformer.Training.Distributed;
using GpuTransformer.Training.Generation;
using GpuTransformer.Training.Inspection;
using GpuTransformer.Training.Reporting;
using GpuTransformer.Training.Tokenizers;

namespace GpuTransformer.Training.Runs;

/// <summary>Everything a language-model run is made of, from a preset and options or from a checkpoint.</summary>
/// <param name="Preset">The preset's name (stored in checkpoints).</param>
/// <param name="Tokenizer">Tokenizer kind (<see cref="TokenizerFactory.Kinds"/>); on resume the checkpoint's.</param>
/// <param name="Model">The model's config; its vocabulary size is the tokenizer's (set by the run).</param>
/// <param name="BatchSize">Windows per micro-batch.</param>
/// <param name="Context">Tokens per training window.</param>
/// <param name="Seed">Seed of the initial weights, dropout and training windows.</param>
/// <param name="EvaluationWindows">Validation windows per evaluation (0: the whole split).</param>
/// <param name="Trainer">The trainer's options (its checkpoint path is set by the run).</param>
/// <param name="Corpus">Corpus argument (<see cref="Corpora.Load"/>; null: the default corpus).</param>
/// <param name="SplitSeed">Seed of the by-document split.</param>
/// <param name="TimeLimit">Training time budget, or none.</param>
public sealed record LanguageModelRunSettings(
    string Preset,
    string Tokenizer,
    LanguageModelConfig Model,
    int BatchSize,
    int Context,
    int Seed,
    int EvaluationWindows,
    TrainerOptions Trainer,
    string? Corpus,
    int SplitSeed,
    TimeSpan? TimeLimit)
{
    /// <summary>Run folder; null: <c>runs/&lt;corpus&gt;-&lt;preset&gt;-&lt;time&gt;</c>, or the checkpoint's folder on resume.</summary>
    public string? RunFolder { get; init; }

    /// <summary>Whether a named <see cref="RunFolder"/> that already holds a run may be replaced (<c>--force</c>).</summary>
    public bool ReplaceExistingRun { get; init; }

    /// <summary>On resume, a tokenizer kind the checkpoint's must be (null: no check).</summary>
    public string? RequestedTokenizer { get; init; }

    /// <summary>Where corpora are cached and how they are fetched (the split seed is <see cref="SplitSeed"/>).</summary>
    public CorpusOptions CorpusOptions { get; init; } = new();
}

/// <summary>
/// A language-model run as <c>train</c> does it, callable from C#: <see cref="Start"/> loads the
/// corpus, builds (or reads from the checkpoint) the tokenizer, measures the unigram baseline,
/// checks the memory estimate against the device, builds the model, task and trainer (restoring
/// a checkpoint) and writes the tokenizer to the run folder; <see cref="Train"/> runs the trainer,
/// reporting through <see cref="ITrainingProgress"/>; <see cref="Samples"/> draws text continuations
/// (<see cref="LanguageModelGenerator"/>) and writes samples.txt; <see cref="Attention"/> gives the
/// maps to draw; <see cref="WriteSummary"/> writes summary.json. Drawing and printing are the caller's.
/// </summary>
public sealed class LanguageModelRun : IDisposable
{
    /// <summary>Folder of run folders (relative to the working directory).</summary>
    public const string RunsFolder = "runs";

    /// <summary>Temperature of the sampled continuations (each prompt also gets a greedy one).</summary>
    public const double SampleTemperature = 0.8;

    private LanguageModelRun()
    {
    }

    /// <summary>The settings (the trainer's checkpoint path and time limit filled in).</summary>
    public required LanguageModelRunSettings Settings { get; init; }

    /// <summary>The device the run trains on.</summary>
    public required ComputeDevice Device { get; init; }

    /// <summary>The corpus.</summary>
    public required TextCorpus Corpus { get; init; }

    /// <summary>The corpus's splits as token streams, and the tokenizer.</summary>
    public required TokenizedCorpus Tokens { get; init; }

    /// <summary>The tokenizer.</summary>
    public ITokenizer Tokenizer => Tokens.Tokenizer;

    /// <summary>The unigram model of the training split, scored on the validation split.</summary>
    public required UnigramBaseline Baseline { get; init; }

    /// <summary>Estimated device bytes of the model and one micro-batch.</summary>
    public required long MemoryEstimate { get; init; }

    /// <summary>The run folder (checkpoint, metrics, tokenizer, samples, summary).</summary>
    public required string RunFolder { get; init; }

    /// <summary>The checkpoint the run continues, if any.</summary>
    public required CheckpointFile? ResumedFrom { get; init; }

    /// <summary>The model.</summary>
    public required LanguageModel Model { get; init; }

    /// <summary>The metrics.csv and metrics.jsonl of the run folder (null on data-parallel ranks other than 0).</summary>
    public required MetricsLogger? Log { get; init; }

    /// <summary>How this rank shares each step with the others, or null: one process.</summary>
    public required DataParallel? Parallel { get; init; }

    /// <summary>The trainer (its <see cref="Trainer.Metrics"/> are the loss curve's data).</summary>
    public required Trainer Trainer { get; init; }

    /// <summary>
    /// Prepares the run: everything before the first step. Checks that the model and one
    /// micro-batch fit the device before allocating.
    /// </summary>
    /// <param name="device">Where to train.</param>
    /// <param name="settings">The run's settings.</param>
    /// <param name="resumeFrom">A checkpoint to continue exactly (its tokenizer, config and state), or null.</param>
    /// <param name="communicator">The ranks of a data-parallel run (<see cref="DataParallel"/>; every rank calls
    /// <see cref="Start"/>, rank 0 alone writes to the run folder), or null: one process.</param>
    /// <exception cref="ArgumentException">The model does not fit the device, or the settings disagree with the data.</exception>
    public static LanguageModelRun Start(ComputeDevice device, LanguageModelRunSettings settings, CheckpointFile? resumeFrom = null, ICommunicator? communicator = null)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(settings);
        var root = communicator is null || communicator.Rank == 0;
        if (resumeFrom is not null)
            DataParallel.RequireSameRanks(resumeFrom, communicator?.Size ?? 1);

        // Before any long work: a named folder must not hold another run; on resume, the run's history.
        var checkpointFolder = resumeFrom is null ? null : Path.GetDirectoryName(Path.GetFullPath(resumeFrom.Path))!;
        var namedFolder = settings.RunFolder is { } named && Path.TrimEndingDirectorySeparator(Path.GetFullPath(named)) != checkpointFolder ? named : null;
        if (namedFolder is not null)
            Training.RunFolder.RequireNoRun(namedFolder, settings.ReplaceExistingRun);
        var history = checkpointFolder is null ? null : Training.RunFolder.ReadHistory(checkpointFolder);

        // Data: the corpus (on resume, the very text the run trained on), its tokenizer (the
        // checkpoint's on resume) and the unigram baseline.
        var corpus = Corpora.Load(settings.Corpus, settings.CorpusOptions with { SplitSeed = settings.SplitSeed });
        resumeFrom?.Corpus().RequireSameText(corpus);
        var trainTexts = corpus.Train.Select(d => d.Text);
        var tokenizer = resumeFrom is null
            ? TokenizerFactory.Create(settings.Tokenizer, trainTexts)
            : resumeFrom.Tokenizer(settings.RequestedTokenizer is { } requested ? TokenizerFactory.Create(requested, trainTexts) : null);
        var tokens = TokenizedCorpus.Create(corpus, tokenizer);
        var baseline = UnigramBaseline.OnValidation(tokens);
        var config = resumeFrom?.LanguageModelConfig() ?? settings.Model with { VocabularySize = tokenizer.VocabularySize };
        var estimate = DeviceMemory.RequireFits(config, settings.BatchSize, settings.Context, device.Description, device.Tuning);

        // Rank 0 alone creates and claims the folder; the other ranks write nothing.
        var defaultName = $"{corpus.Name}-{settings.Preset}-{DateTime.Now:yyyyMMdd-HHmmss}";
        var runFolder = !root ? Path.GetFullPath(namedFolder ?? checkpointFolder ?? Path.Combine(RunsFolder, defaultName))
            : namedFolder is not null ? Training.RunFolder.Create(namedFolder, settings.ReplaceExistingRun)
            : checkpointFolder ?? Training.RunFolder.CreateUnique(RunsFolder, defaultName);
        settings = settings with
        {
            Model = config,
            RunFolder = runFolder,
            Trainer = settings.Trainer with { CheckpointPath = Path.Combine(runFolder, Checkpoint.FileName), TimeLimit = settings.TimeLimit },
        };

        LanguageModel? model = null;
        MetricsLogger? logger = null;
        DataParallel? parallel = null;
        Trainer? trainer = null;
        try
        {
            model = new LanguageModel(device, config, settings.Seed);
            var task = new LanguageModelTask(model, tokens, CorpusIdentity.Of(corpus, settings.Corpus, settings.SplitSeed, tokens),
                settings.BatchSize, settings.Context, (ulong)settings.Seed, settings.EvaluationWindows);
            parallel = communicator is { Size: > 1 } ? new DataParallel(communicator, task, settings.Trainer) : null;
            logger = root ? MetricsLogger.InDirectory(runFolder) : null;
            var metadata = new Dictionary<string, string>
            {
                ["preset"] = settings.Preset,
                ["device"] = $"{device.Description.BackendName}:{device.Description.IndexInBackend} {device.Description.Name}",
            };
            trainer = new Trainer(task, settings.Trainer, logger, metadata, parallel: parallel);
            if (resumeFrom is not null)
            {
                trainer.Restore(resumeFrom, history);
                foreach (var record in trainer.Metrics)
                    logger?.Log(record); // the log restarts from the checkpoint: steps after it are done again
            }
            if (root)
                TokenizerFactory.Save(tokenizer, Path.Combine(runFolder, "tokenizer.json"));
            return new LanguageModelRun
            {
                Settings = settings, Device = device, Corpus = corpus, Tokens = tokens, Baseline = baseline, MemoryEstimate = estimate,
                RunFolder = runFolder, ResumedFrom = resumeFrom, Model = model, Log = logger, Parallel = parallel, Trainer = trainer,
            };
        }
        catch
        {
            trainer?.Dispose();
            parallel?.Dispose();
            logger?.Dispose();
            model?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Trains to the end of the schedule, the time limit, a cancellation (after the current step,
    /// with a final evaluation and checkpoint) or a non-finite value; reports to <paramref name="progress"/>.
    /// </summary>
    public TrainingResult Train(ITrainingProgress? progress = null, CancellationToken cancellation = default) =>
        Trainer.Run(progress, cancellation);

    /// <summary>
    /// For each prompt, a greedy continuation then one sampled at <see cref="SampleTemperature"/>
    /// (seeded by the run's seed + the prompt's index), <paramref name="maxTokens"/> tokens at most;
    /// written to samples.txt in the run folder (▸ marks the end of the prompt). <paramref name="maxTokens"/> must be at least 1.
    /// </summary>
    public IReadOnlyList<TextSample> Samples(IReadOnlyList<string> prompts, int maxTokens)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxTokens, 1);
        var samples = new List<TextSample>();
        var text = new StringBuilder();
        for (var i = 0; i < prompts.Count; i++)
        {
            foreach (var (label, temperature) in new[] { ("greedy", 0.0), ("sampled", SampleTemperature) })
            {
                var generated = LanguageModelGenerator.Generate(Model, Tokenizer, prompts[i], new GenerationOptions
                {
                    MaxTokens = maxTokens,
                    Sampling = new SamplingOptions { Temperature = temperature, Seed = (ulong)(Settings.Seed + i) },
                });
                var sample = new TextSample(label, prompts[i], generated);
                samples.Add(sample);
                text.AppendLine(sample.Line).AppendLine();
            }
        }
        File.WriteAllText(Path.Combine(RunFolder, "samples.txt"), text.ToString());
        return samples;
    }

    /// <summary>The causal self-attention of the last layer over the first <paramref name="maxTokens"/> ids of <paramref name="sample"/> (context and continuation).</summary>
    /// <param name="sample">A sample of <see cref="Samples"/>.</param>
    /// <param name="label">A token's text as the axis shows it.</param>
    /// <param name="maxTokens">Most ids drawn (the map is maxTokens²).</param>
    public AttentionMap Attention(TextSample sample, Func<string, string> label, int maxTokens = 32)
    {
        ArgumentNullException.ThrowIfNull(sample);
        ArgumentNullException.ThrowIfNull(label);
        var generated = sample.Generated;
        var shown = generated.ContextIds.Concat(generated.GeneratedIds).Take(Math.Min(maxTokens, Model.Config.MaxSequenceLength)).ToArray();
        return AttentionMaps.ForLanguageModel(Model, shown, [.. shown.Select(id => label(Tokenizer.TokenText(id)))])[^1];
    }

    /// <summary>Writes summary.json: status, settings, steps, tokens, throughput, validation and baseline losses.</summary>
    /// <param name="result">What <see cref="Train"/> returned.</param>
    /// <param name="wall">Wall time of the whole command.</param>
    /// <param name="command">The command line that started the run.</param>
    public void WriteSummary(TrainingResult result, TimeSpan wall, string command)
    {
        ArgumentNullException.ThrowIfNull(result);
        var s = Settings;
        var summary = new JsonObject
        {
            ["status"] = result.Status.ToString(),
            ["message"] = result.Message,
            ["preset"] = s.Preset,
            ["device"] = Device.Description.ToString(),
            ["config"] = JsonNode.Parse(Model.Config.ToJson()),
            ["batch_size"] = s.BatchSize,
            ["context"] = s.Context,
            ["accumulate"] = Trainer.Options.Accumulate,
            ["steps"] = result.Step,
            ["tokens"] = Trainer.Tokens,
            ["tokens_per_s"] = Math.Round(result.TokensPerSecond, 1),
            ["training_s"] = Math.Round(result.ElapsedSeconds, 1),
            ["wall_s"] = Math.Round(wall.TotalSeconds, 1),
            ["val_loss"] = result.Validation?.Loss,
            ["val_ppl"] = result.Validation?.Perplexity,
            ["unigram_val_loss"] = Baseline.CrossEntropy,
            ["unigram_val_ppl"] = Baseline.Perplexity,
            ["command"] = command,
        };
        File.WriteAllText(Path.Combine(RunFolder, "summary.json"), summary.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n");
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        Trainer.Dispose();
        Parallel?.Dispose();
        Log?.Dispose();
        Model.Dispose();
    }
}

/// <summary>A text sample of a run: a prompt and its generated continuation.</summary>
/// <param name="Label">"greedy" or "sampled".</param>
/// <param name="Prompt">The prompt text.</param>
/// <param name="Generated">The generator's result (context ids, new ids, text).</param>
public sealed record TextSample(string Label, string Prompt, GenerationResult Generated)
{
    /// <summary><c>[label] prompt▸continuation</c>.</summary>
    public string Line => $"[{Label}] {Prompt}▸{Generated.Text}";
}
