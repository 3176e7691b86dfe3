using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using GpuTransformer.Cli.Profiling;
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Kernels.Profiling;
using GpuTransformer.Layers;
using GpuTransformer.Training;
using GpuTransformer.Training.Data;
using GpuTransformer.Training.Reporting;
using GpuTransformer.Training.Tokenizers;

namespace GpuTransformer.Cli.Commands;

/// <summary>
/// <c>train</c>: trains a decoder-only language model on a corpus (default: the State of the Union
/// addresses, fetched once) with a preset chosen by the device (<see cref="LanguageModelPresets"/>),
/// every hyper-parameter overridable. Checks the memory estimate against the device before
/// allocating; shows progress; writes metrics (CSV, JSONL), checkpoints, the loss curve with the
/// unigram baseline, an attention map and text samples to the run folder; prints the validation
/// perplexity next to the unigram baseline's. <c>--resume</c> continues a run exactly.
/// </summary>
public static class TrainCommand
{
    /// <summary>Folder of run folders (relative to the working directory).</summary>
    public const string RunsFolder = "runs";

    /// <summary>Prompts of the samples printed at the end unless <c>--prompt</c> is given.</summary>
    public static readonly IReadOnlyList<string> DefaultPrompts = ["The state of the Union is", "We must"];

    public static Command Create(CliContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var options = new TrainOptions();
        var command = new Command("train",
            "Train a language model (decoder-only Transformer) on a corpus: progress, metrics, checkpoints, loss curve, attention map, samples, " +
            "validation perplexity vs the unigram baseline. With no options: the default preset of the best device on the State of the Union corpus.");
        options.AddTo(command);
        context.SetAction(command, parse => Run(context, parse, options));
        return command;
    }

    private static int Run(CliContext context, ParseResult parse, TrainOptions o)
    {
        var wall = Stopwatch.StartNew();
        var c = CultureInfo.InvariantCulture;
        var output = context.Output;
        var timeLimit = o.ParseTimeLimit(parse);

        using var device = ComputeDevice.Create(context.Backend(parse), context.DeviceOptions(parse));
        var resume = parse.GetValue(o.Resume);
        var checkpoint = resume is null ? null : Checkpoint.Read(resume);
        var settings = checkpoint is null ? o.FromPreset(parse, device.Description) : o.FromCheckpoint(parse, checkpoint);
        settings = settings with { TimeLimit = timeLimit ?? settings.TimeLimit };

        // Data: the corpus, its tokenizer (the checkpoint's on resume) and the unigram baseline.
        var corpusOptions = context.CorpusOptions(parse) with { SplitSeed = settings.SplitSeed };
        var corpus = Corpora.Load(settings.Corpus, corpusOptions);
        var trainTexts = corpus.Train.Select(d => d.Text);
        var tokenizer = checkpoint is null
            ? TokenizerFactory.Create(settings.Tokenizer, trainTexts)
            : checkpoint.Tokenizer(parse.GetValue(o.Tokenizer) is { } requested ? TokenizerFactory.Create(requested, trainTexts) : null);
        var tokens = TokenizedCorpus.Create(corpus, tokenizer);
        var baseline = UnigramBaseline.OnValidation(tokens);
        var config = checkpoint?.LanguageModelConfig() ?? settings.Model with { VocabularySize = tokenizer.VocabularySize };
        var estimate = DeviceMemory.RequireFits(config, settings.BatchSize, settings.Context, device.Description);

        var runFolder = Path.GetFullPath(parse.GetValue(o.Out)
            ?? (checkpoint is not null ? Path.GetDirectoryName(checkpoint.Path)! : Path.Combine(RunsFolder, $"{corpus.Name}-{settings.Preset}-{DateTime.Now:yyyyMMdd-HHmmss}")));
        Directory.CreateDirectory(runFolder);
        var checkpointPath = Path.Combine(runFolder, Checkpoint.FileName);

        using var model = new LanguageModel(device, config, settings.Seed);
        var task = new LanguageModelTask(model, tokens, CorpusIdentity.Of(corpus, settings.Corpus, settings.SplitSeed, tokens),
            settings.BatchSize, settings.Context, (ulong)settings.Seed, settings.EvaluationWindows);
        var trainerOptions = settings.Trainer with { CheckpointPath = checkpointPath, TimeLimit = settings.TimeLimit };
        using var logger = MetricsLogger.InDirectory(runFolder);
        var metadata = new Dictionary<string, string>
        {
            ["preset"] = settings.Preset,
            ["device"] = $"{device.Description.BackendName}:{device.Description.IndexInBackend} {device.Description.Name}",
        };
        using var trainer = new Trainer(task, trainerOptions, logger, metadata);
        if (parse.GetValue(o.Profile))
            trainer.Profiler = KernelProfiler.Attach(device);
        if (checkpoint is not null)
        {
            trainer.Restore(checkpoint);
            foreach (var record in trainer.Metrics)
                logger.Log(record); // the log restarts from the checkpoint: steps after it are done again
        }

        TokenizerFactory.Save(tokenizer, Path.Combine(runFolder, "tokenizer.json"));
        PrintHeader(context, settings, device, corpus, tokens, config, model, trainerOptions, estimate, baseline, runFolder, checkpoint);

        using var cancellation = new CancellationTokenSource();
        void OnCancel(object? sender, ConsoleCancelEventArgs e)
        {
            if (cancellation.IsCancellationRequested)
                return;
            e.Cancel = true;
            cancellation.Cancel();
            context.Error.WriteLine("Stopping after this step with a final evaluation and checkpoint (Ctrl+C again to abort)…");
        }
        Console.CancelKeyPress += OnCancel;
        TrainingResult result;
        try
        {
            result = TrainingProgress.Run(trainerOptions.Steps, progress => trainer.Run(progress, cancellation.Token), new TrainingProgressOptions
            {
                Interactive = context.Interactive,
                Console = context.Out,
                PlainOutput = output,
                Label = "train",
            });
        }
        finally
        {
            Console.CancelKeyPress -= OnCancel;
        }

        if (trainer.Profiler is { } profiler)
            ProfileOutput.Write(output, profiler.Report($"train {settings.Preset}: d_model {config.DModel}, {config.NHead} heads, {config.NumLayers} layers, [{settings.BatchSize}, {settings.Context}]"), runFolder, "profile");
        var pictures = new List<string>();
        if (trainer.Metrics.Any(r => double.IsFinite(r.Loss)))
        {
            var lossPlot = Path.Combine(runFolder, "loss.png");
            LossCurvePlot.Save(lossPlot, trainer.Metrics,
                $"{corpus.Name}, {tokenizer.Name} tokens: d_model {config.DModel}, {config.NumLayers} layers, context {settings.Context}",
                baselineLoss: baseline.CrossEntropy, baselineLabel: "unigram baseline (validation)");
            pictures.Add(lossPlot);
        }
        if (result.Status == TrainingStatus.NonFinite)
        {
            context.Error.WriteLine($"error: {result.Message}");
            return CliApp.Failure;
        }
        output.WriteLine(result.Message);

        var prompts = parse.GetValue(o.Prompts) is { Length: > 0 } given ? given : DefaultPrompts.ToArray();
        var samples = WriteSamples(context, model, tokenizer, prompts, parse.GetValue(o.SampleTokens), settings.Seed, runFolder);
        pictures.Add(DrawAttention(model, tokenizer, samples[0].Ids, runFolder));

        var validation = result.Validation;
        output.WriteLine();
        if (validation is { } v)
        {
            output.WriteLine(string.Create(c,
                $"Validation: loss {v.Loss:F4} nats/token, perplexity {v.Perplexity:F2} — unigram baseline perplexity {baseline.Perplexity:F2} ({baseline.Perplexity / v.Perplexity:F1}× higher)"));
        }
        output.WriteLine(string.Create(c,
            $"Throughput: {result.TokensPerSecond:N0} tokens/s; {result.Step} steps, {trainer.Tokens:N0} training tokens, {TrainingProgress.FormatDuration(TimeSpan.FromSeconds(result.ElapsedSeconds))} training; whole command {TrainingProgress.FormatDuration(wall.Elapsed)}"));
        WriteSummary(runFolder, settings, config, result, baseline, trainer, wall.Elapsed, device);
        output.WriteLine($"Run folder: {runFolder}");
        output.WriteLine($"  {Checkpoint.FileName}, metrics.csv, metrics.jsonl, {string.Join(", ", pictures.Select(Path.GetFileName))}, samples.txt, tokenizer.json, summary.json");
        return 0;
    }

    private static void PrintHeader(CliContext context, RunSettings s, ComputeDevice device, TextCorpus corpus, TokenizedCorpus tokens,
        LanguageModelConfig config, LanguageModel model, TrainerOptions trainer, long estimate, UnigramBaseline baseline, string runFolder, CheckpointFile? checkpoint)
    {
        var c = CultureInfo.InvariantCulture;
        var output = context.Output;
        var d = device.Description;
        output.WriteLine($"Device: {d.BackendName}:{d.IndexInBackend} {d.Name} ({d.Kind}){(d.Kind == DeviceKind.Simulator ? " — the CPU simulator is for correctness, not speed; install PoCL for a fast CPU path" : "")}");
        output.WriteLine(string.Create(c, $"Corpus: {corpus.Name} ({corpus.DocumentCount} documents, {corpus.TotalBytes:N0} bytes); {corpus.SplitRule}"));
        output.WriteLine(string.Create(c,
            $"Tokenizer: {TokenizerFactory.Describe(tokens.Tokenizer)}; tokens train {tokens.Train.Length:N0}, valid {tokens.Valid.Length:N0}, test {tokens.Test.Length:N0}"));
        output.WriteLine(string.Create(c,
            $"Model: d_model {config.DModel}, {config.NHead} heads, {config.NumLayers} layers, d_ff {config.DimFeedforward}, context {s.Context}, dropout {config.Dropout:G3} — {model.ParameterCount():N0} parameters"));
        var o = trainer.Optimizer;
        var clip = double.IsFinite(o.MaxGradNorm) ? o.MaxGradNorm.ToString("G3", c) : "off";
        var limit = trainer.TimeLimit is { } l ? $"; time limit {TrainingProgress.FormatDuration(l)}" : "";
        output.WriteLine(string.Create(c,
            $"Training: preset {s.Preset}; {trainer.Steps:N0} steps × {trainer.Accumulate} × [{s.BatchSize}, {s.Context}] tokens; AdamW (β {o.Beta1:G3}/{o.Beta2:G4}, weight decay {o.WeightDecay:G3}, clip {clip}); {trainer.Schedule.Describe(trainer.Steps)}{limit}"));
        output.WriteLine(string.Create(c, $"Memory: about {DeviceMemory.Format(estimate)} of {DeviceMemory.Format(DeviceMemory.Capacity(d))} device memory"));
        output.WriteLine(string.Create(c, $"Unigram baseline (validation): {baseline.CrossEntropy:F3} nats/token, perplexity {baseline.Perplexity:F2}"));
        if (checkpoint is not null)
            output.WriteLine(string.Create(c, $"Resuming from step {checkpoint.Step} ({checkpoint.Path})"));
        output.WriteLine($"Run folder: {runFolder}");
    }

    private static List<TextSample> WriteSamples(CliContext context, LanguageModel model, ITokenizer tokenizer, string[] prompts, int maxTokens, int seed, string runFolder)
    {
        const double Temperature = 0.8;
        var samples = new List<TextSample>();
        var text = new StringBuilder();
        context.Output.WriteLine();
        context.Output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Samples (greedy, then sampled at temperature {Temperature}; ▸ marks the end of the prompt):"));
        for (var i = 0; i < prompts.Length; i++)
        {
            foreach (var (label, temperature) in new[] { ("greedy", 0.0), ("sampled", Temperature) })
            {
                var sample = GenerateSample(model, tokenizer, prompts[i], maxTokens, temperature, (ulong)(seed + i));
                samples.Add(sample);
                var line = $"[{label}] {sample.Prompt}▸{sample.Completion}";
                context.Output.WriteLine("  " + line.Replace("\n", " ⏎ ", StringComparison.Ordinal));
                text.AppendLine(line).AppendLine();
            }
        }
        File.WriteAllText(Path.Combine(runFolder, "samples.txt"), text.ToString());
        return samples;
    }

    /// <summary>
    /// The one place that draws a sample. The generation helper's <c>LanguageModelGenerator.Generate</c>
    /// (top-k/p, sliding window) replaces this call when it lands.
    /// </summary>
    private static TextSample GenerateSample(LanguageModel model, ITokenizer tokenizer, string prompt, int maxTokens, double temperature, ulong seed) =>
        TrainingSamples.Generate(model, tokenizer, prompt, maxTokens, temperature, seed);

    /// <summary>Every head of the last layer on the first tokens of a sample: attention.png.</summary>
    private static string DrawAttention(LanguageModel model, ITokenizer tokenizer, int[] ids, string runFolder)
    {
        const int MaxTokens = 32;
        var shown = ids.AsSpan(0, Math.Min(ids.Length, MaxTokens)).ToArray();
        var layers = TrainingSamples.AttentionWeights(model, shown);
        var n = shown.Length;
        var heads = model.Config.NHead;
        var last = layers[^1];
        var perHead = Enumerable.Range(0, heads).Select(h => last.AsSpan(h * n * n, n * n).ToArray()).ToList();
        var labels = shown.Select(id => AttentionHeatmap.Label(tokenizer.TokenText(id))).ToList();
        var path = Path.Combine(runFolder, "attention.png");
        AttentionHeatmap.SaveGrid(path, perHead, n, n, labels, labels, layers.Count - 1,
            title: $"causal self-attention, layer {layers.Count - 1} of a greedy sample");
        return path;
    }

    private static void WriteSummary(string runFolder, RunSettings s, LanguageModelConfig config, TrainingResult result, UnigramBaseline baseline,
        Trainer trainer, TimeSpan wall, ComputeDevice device)
    {
        var summary = new JsonObject
        {
            ["status"] = result.Status.ToString(),
            ["message"] = result.Message,
            ["preset"] = s.Preset,
            ["device"] = device.Description.ToString(),
            ["config"] = JsonNode.Parse(config.ToJson()),
            ["batch_size"] = s.BatchSize,
            ["context"] = s.Context,
            ["accumulate"] = trainer.Options.Accumulate,
            ["steps"] = result.Step,
            ["tokens"] = trainer.Tokens,
            ["tokens_per_s"] = Math.Round(result.TokensPerSecond, 1),
            ["training_s"] = Math.Round(result.ElapsedSeconds, 1),
            ["wall_s"] = Math.Round(wall.TotalSeconds, 1),
            ["val_loss"] = result.Validation?.Loss,
            ["val_ppl"] = result.Validation?.Perplexity,
            ["unigram_val_loss"] = baseline.CrossEntropy,
            ["unigram_val_ppl"] = baseline.Perplexity,
            ["command"] = "gpu-transformer " + string.Join(' ', Environment.GetCommandLineArgs().Skip(1)),
        };
        File.WriteAllText(Path.Combine(runFolder, "summary.json"), summary.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n");
    }
}

/// <summary>Everything a language-model run is made of, from a preset and flags or from a checkpoint.</summary>
internal sealed record RunSettings(
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
    TimeSpan? TimeLimit);

/// <summary>The options of <c>train</c>.</summary>
internal sealed class TrainOptions
{
    public CorpusSelection Corpus { get; } = new();

    public Option<string?> Preset { get; } = new("--preset", "-p")
    {
        Description = $"Hyper-parameter preset: {string.Join(", ", LanguageModelPresets.All.Select(p => p.Name))} (default: gpu on a GPU, cpu on OpenCL on the CPU, tiny on the simulator)",
        HelpName = string.Join('|', LanguageModelPresets.All.Select(p => p.Name)),
    };

    public Option<string?> Tokenizer { get; } = new("--tokenizer", "-t")
    {
        Description = $"Tokenizer: {string.Join(", ", TokenizerFactory.Kinds)} (default: the preset's; on --resume it must match the checkpoint's)",
        HelpName = string.Join('|', TokenizerFactory.Kinds),
    };

    public Option<int?> DModel { get; } = new("--d-model") { Description = "Model width d_model" };

    public Option<int?> Heads { get; } = new("--heads") { Description = "Attention heads (must divide d_model)" };

    public Option<int?> Layers { get; } = new("--layers") { Description = "Decoder blocks" };

    public Option<int?> FeedForward { get; } = new("--d-ff") { Description = "Feed-forward width dim_feedforward" };

    public Option<int?> Context { get; } = new("--context") { Description = "Tokens per training window (= max_seq_len)" };

    public Option<int?> BatchSize { get; } = new("--batch-size") { Description = "Windows per micro-batch" };

    public Option<int?> Accumulate { get; } = new("--accumulate") { Description = "Micro-batches per optimizer step (gradient accumulation)" };

    public Option<long?> Steps { get; } = new("--steps") { Description = "Optimizer steps of the whole run" };

    public Option<double?> LearningRate { get; } = new("--lr") { Description = "Peak learning rate" };

    public Option<long?> Warmup { get; } = new("--warmup") { Description = "Warmup steps" };

    public Option<double?> MinLearningRate { get; } = new("--min-lr") { Description = "Final learning rate of the cosine schedule (default lr/10)" };

    public Option<string?> Schedule { get; } = new("--schedule")
    {
        Description = "Learning-rate schedule after the warmup: cosine (default) or inverse-sqrt (the paper's)",
        HelpName = "cosine|inverse-sqrt",
    };

    public Option<double?> WeightDecay { get; } = new("--weight-decay") { Description = "AdamW weight decay (weights only; not biases, norms, embeddings)" };

    public Option<double?> Clip { get; } = new("--clip") { Description = "Clip the global gradient norm to this (0: off; default 1)" };

    public Option<float?> Dropout { get; } = new("--dropout") { Description = "Dropout probability" };

    public Option<int?> EvaluateEvery { get; } = new("--eval-every") { Description = "Steps between validation evaluations (0: only at the end)" };

    public Option<int?> EvaluationWindows { get; } = new("--eval-windows") { Description = "Validation windows per evaluation (0: the whole validation split)" };

    public Option<int?> CheckpointEvery { get; } = new("--checkpoint-every") { Description = "Steps between checkpoints (0: only at the end)" };

    public Option<string?> TimeLimit { get; } = new("--time-limit")
    {
        Description = "Training time budget, e.g. 90s, 7m, 1h (none: no limit): training ends early with a final evaluation and checkpoint",
        HelpName = "duration",
    };

    public Option<string?> Out { get; } = new("--out", "-o") { Description = $"Run folder (default {TrainCommand.RunsFolder}/<corpus>-<preset>-<time>; on --resume the checkpoint's folder)" };

    public Option<string?> Resume { get; } = new("--resume") { Description = "Continue the run of this checkpoint (a file or a run folder) exactly where it stopped" };

    public Option<int> Seed { get; } = new("--seed") { Description = "Seed of the initial weights, dropout and training windows", DefaultValueFactory = _ => 0 };

    public Option<string[]> Prompts { get; } = new("--prompt")
    {
        Description = "Prompt of the samples printed at the end (repeatable)",
        AllowMultipleArgumentsPerToken = false,
    };

    public Option<int> SampleTokens { get; } = new("--sample-tokens") { Description = "Tokens per sample", DefaultValueFactory = _ => 120 };

    public Option<bool> Profile { get; } = new("--profile")
    {
        Description = "Time every kernel family, layer and host copy of each step after the first two (slower: each launch waits for the device); writes profile.md/.json/.png into the run folder",
    };

    public TrainOptions()
    {
        Preset.Validators.Add(r => Check(r, () => LanguageModelPresets.Get(r.GetValueOrDefault<string?>() ?? "cpu")));
        Tokenizer.Validators.Add(r => Check(r, () => TokenizerFactory.ParseKind(r.GetValueOrDefault<string?>() ?? "byte")));
        Schedule.Validators.Add(r => Check(r, () => ParseSchedule(r.GetValueOrDefault<string?>())));
        TimeLimit.Validators.Add(r => Check(r, () => ParseDuration(r.GetValueOrDefault<string?>())));
    }

    public void AddTo(Command command)
    {
        Corpus.AddTo(command);
        foreach (Option option in new Option[]
        {
            Preset, Tokenizer, DModel, Heads, Layers, FeedForward, Context, BatchSize, Accumulate, Steps, LearningRate, Warmup, MinLearningRate,
            Schedule, WeightDecay, Clip, Dropout, EvaluateEvery, EvaluationWindows, CheckpointEvery, TimeLimit, Out, Resume, Seed, Prompts, SampleTokens, Profile,
        })
        {
            command.Options.Add(option);
        }
    }

    public TimeSpan? ParseTimeLimit(ParseResult parse) => ParseDuration(parse.GetValue(TimeLimit));

    /// <summary>A new run: the preset (named, or the device's default) with the flags on top.</summary>
    public RunSettings FromPreset(ParseResult parse, DeviceDescription device)
    {
        var p = parse.GetValue(Preset) is { } name ? LanguageModelPresets.Get(name) : LanguageModelPresets.For(device);
        var preset = p with
        {
            DModel = parse.GetValue(DModel) ?? p.DModel,
            Heads = parse.GetValue(Heads) ?? p.Heads,
            Layers = parse.GetValue(Layers) ?? p.Layers,
            FeedForward = parse.GetValue(FeedForward) ?? p.FeedForward,
            Context = parse.GetValue(Context) ?? p.Context,
            Dropout = parse.GetValue(Dropout) ?? p.Dropout,
        };
        var learningRate = parse.GetValue(LearningRate) ?? p.LearningRate;
        var clip = parse.GetValue(Clip) ?? 1.0;
        var trainer = new TrainerOptions
        {
            Steps = parse.GetValue(Steps) ?? p.Steps,
            Accumulate = parse.GetValue(Accumulate) ?? p.Accumulate,
            EvaluateEvery = parse.GetValue(EvaluateEvery) ?? p.EvaluateEvery,
            CheckpointEvery = parse.GetValue(CheckpointEvery) ?? 0,
            Optimizer = new Training.Optimization.AdamWOptions
            {
                WeightDecay = parse.GetValue(WeightDecay) ?? 0.01,
                MaxGradNorm = clip == 0 ? double.PositiveInfinity : clip,
            },
            Schedule = new ScheduleOptions
            {
                Kind = ParseSchedule(parse.GetValue(Schedule)),
                LearningRate = learningRate,
                WarmupSteps = parse.GetValue(Warmup) ?? p.Warmup,
                MinLearningRate = parse.GetValue(MinLearningRate) ?? learningRate / 10,
            },
        }.Validate();
        return new RunSettings(
            p.Name, TokenizerFactory.ParseKind(parse.GetValue(Tokenizer) ?? p.Tokenizer), preset.ModelConfig(vocabularySize: 1),
            parse.GetValue(BatchSize) ?? p.BatchSize, preset.Context, parse.GetValue(Seed), parse.GetValue(EvaluationWindows) ?? p.EvaluationWindows,
            trainer, parse.GetValue(Corpus.Corpus), parse.GetValue(Corpus.SplitSeed), p.TimeLimit);
    }

    /// <summary>
    /// A resumed run: everything from the checkpoint. Flags that would change the run (model, data,
    /// optimizer, schedule) must agree with it; <c>--steps</c> may extend it, the intervals and the time
    /// limit may change (they do not change the losses).
    /// </summary>
    public RunSettings FromCheckpoint(ParseResult parse, CheckpointFile checkpoint)
    {
        var config = checkpoint.LanguageModelConfig();
        var task = LanguageModelTaskSettings.Read(checkpoint);
        var stored = checkpoint.TrainerOptions();
        var corpus = checkpoint.Corpus();
        var presetName = checkpoint.Metadata("preset") ?? LanguageModelPresets.Cpu.Name;
        var seed = (int)task.DataSeed;
        var schedule = stored.Schedule;

        var conflicts = new List<string>();
        void Same<T>(Option<T> option, T value, Func<T, T, bool>? equal = null)
        {
            if (parse.GetResult(option) is not { Implicit: false })
                return;
            var given = parse.GetValue(option);
            if (!(equal?.Invoke(given!, value) ?? EqualityComparer<T>.Default.Equals(given, value)))
                conflicts.Add(string.Create(CultureInfo.InvariantCulture, $"{option.Name} {given} (checkpoint: {value})"));
        }
        Same(Preset, presetName, (a, b) => string.Equals(a, b, StringComparison.OrdinalIgnoreCase));
        Same(DModel, config.DModel);
        Same(Heads, config.NHead);
        Same(Layers, config.NumLayers);
        Same(FeedForward, config.DimFeedforward);
        Same(Context, task.ContextLength);
        Same(Dropout, config.Dropout);
        Same(BatchSize, task.BatchSize);
        Same(Accumulate, stored.Accumulate);
        Same(LearningRate, schedule.LearningRate);
        Same(Warmup, schedule.WarmupSteps);
        Same(MinLearningRate, schedule.MinLearningRate);
        Same(Schedule, schedule.Kind, (a, b) => ParseSchedule(a) == b);
        Same(WeightDecay, stored.Optimizer.WeightDecay);
        Same(Clip, double.IsFinite(stored.Optimizer.MaxGradNorm) ? stored.Optimizer.MaxGradNorm : 0);
        Same(Seed, seed);
        Same(Corpus.Corpus, corpus.Argument);
        Same(Corpus.SplitSeed, corpus.SplitSeed);
        if (conflicts.Count > 0)
        {
            throw new ArgumentException(
                $"--resume continues the checkpoint's run, but these options differ from it: {string.Join(", ", conflicts)}. " +
                "Omit them, or start a new run (without --resume).");
        }
        var steps = parse.GetValue(Steps) ?? stored.Steps;
        if (steps < checkpoint.Step)
            throw new ArgumentException($"--steps {steps} is below the checkpoint's step {checkpoint.Step}.");
        var trainer = stored with
        {
            Steps = steps,
            EvaluateEvery = parse.GetValue(EvaluateEvery) ?? stored.EvaluateEvery,
            CheckpointEvery = parse.GetValue(CheckpointEvery) ?? stored.CheckpointEvery,
        };
        var preset = LanguageModelPresets.All.FirstOrDefault(p => p.Name == presetName);
        return new RunSettings(presetName, checkpoint.Tokenizer().Name, config, task.BatchSize, task.ContextLength, seed,
            parse.GetValue(EvaluationWindows) ?? task.EvaluationWindows, trainer.Validate(), corpus.Argument, corpus.SplitSeed, preset?.TimeLimit);
    }

    /// <summary>cosine | inverse-sqrt (also inverse_sqrt, rsqrt) → <see cref="ScheduleOptions.Kind"/>; null: cosine.</summary>
    internal static string ParseSchedule(string? name) => name?.Trim().ToLowerInvariant() switch
    {
        null or "" or "cosine" => ScheduleOptions.Cosine,
        "inverse-sqrt" or "inverse_sqrt" or "rsqrt" or "noam" => ScheduleOptions.InverseSqrt,
        _ => throw new ArgumentException($"Unknown schedule '{name}'. Known: cosine, inverse-sqrt."),
    };

    /// <summary>"90", "90s", "7m", "1.5h", "0:07:00" → a duration; null, "none" or "0" → none.</summary>
    internal static TimeSpan? ParseDuration(string? text)
    {
        if (string.IsNullOrWhiteSpace(text) || text.Trim() is "none" or "0")
            return null;
        var t = text.Trim().ToLowerInvariant();
        if (t.Contains(':', StringComparison.Ordinal) && TimeSpan.TryParse(t, CultureInfo.InvariantCulture, out var span) && span > TimeSpan.Zero)
            return span;
        var (number, unit) = t[^1] switch
        {
            's' => (t[..^1], 1.0),
            'm' => (t[..^1], 60.0),
            'h' => (t[..^1], 3600.0),
            _ => (t, 1.0),
        };
        if (double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) && value > 0 && double.IsFinite(value))
            return TimeSpan.FromSeconds(value * unit);
        throw new ArgumentException($"Cannot read the duration '{text}': use seconds (90, 90s), minutes (7m), hours (1.5h), h:mm:ss, or none.");
    }

    private static void Check(System.CommandLine.Parsing.OptionResult result, Action check)
    {
        try
        {
            check();
        }
        catch (ArgumentException e)
        {
            result.AddError(e.Message.Split(" (Parameter", 2)[0]);
        }
    }
}
