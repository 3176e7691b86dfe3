using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using GpuTransformer.Cli.Profiling;
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Kernels.Profiling;
using GpuTransformer.Layers;
using GpuTransformer.Reporting;
using GpuTransformer.Training;
using GpuTransformer.Training.Data;
using GpuTransformer.Training.Distributed;
using GpuTransformer.Training.Reporting;
using GpuTransformer.Training.Runs;
using GpuTransformer.Training.Tokenizers;

namespace GpuTransformer.Cli.Commands;

/// <summary>
/// <c>train</c>: trains a decoder-only language model on a corpus (default: the State of the Union
/// addresses, fetched once) with a preset chosen by the device (<see cref="LanguageModelPresets"/>),
/// every hyper-parameter overridable. The options become <see cref="LanguageModelRunSettings"/>;
/// <see cref="LanguageModelRun"/> does the work (memory check before allocating, metrics,
/// checkpoints, samples, summary in the run folder); the command shows the progress, draws the
/// loss curve and the attention map, and prints the header, the samples and the validation
/// perplexity next to the unigram baseline's. <c>--resume</c> continues a run exactly. Under
/// <c>mpirun -np R</c> it trains data-parallel (<see cref="DataParallel"/>): the same run as one
/// process, rank 0 alone printing and writing.
/// </summary>
public static class TrainCommand
{
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
        var timeLimit = o.ParseTimeLimit(parse);

        var backend = context.Backend(parse);
        using var device = ComputeDevice.Create(backend, Communicators.OneDevicePerRank(context.DeviceOptions(parse), backend));
        // Distributed: MPI under mpirun, one process otherwise; ranks other than 0 print nothing but errors.
        using var communicator = Communicators.Create(new CommunicatorOptions { Kind = o.ParseCommunicator(parse) }, device);
        var root = communicator.Rank == 0;
        if (!root)
            context = Silent(context);
        var output = context.Output;
        var resume = parse.GetValue(o.Resume);
        var checkpoint = resume is null ? null : Checkpoint.Read(resume);
        var settings = checkpoint is null ? o.FromPreset(parse, device.Description) : o.FromCheckpoint(parse, checkpoint);
        settings = settings with
        {
            TimeLimit = timeLimit ?? settings.TimeLimit,
            RunFolder = parse.GetValue(o.Out),
            RequestedTokenizer = checkpoint is null ? null : parse.GetValue(o.Tokenizer),
            CorpusOptions = root ? context.CorpusOptions(parse) : context.CorpusOptions(parse) with { Log = null },
            ReplaceExistingRun = parse.GetValue(o.Force),
        };

        using var run = LanguageModelRun.Start(device, settings, checkpoint, communicator);
        if (parse.GetValue(o.Profile))
            run.Trainer.Profiler = KernelProfiler.Attach(device);
        PrintHeader(context, run);
        if (run.Parallel is { } parallel)
        {
            output.WriteLine(string.Create(c,
                $"Data parallel: {communicator.Description}; each of {communicator.Size} ranks trains {parallel.MicroBatchesPerRank} of the {run.Settings.Trainer.Accumulate} micro-batches of a step, gradients summed in {parallel.BucketCount} bucket(s)"));
        }

        var result = RunOptions.WithCtrlC(context, cancellation => TrainingProgress.Run(
            run.Settings.Trainer.Steps,
            progress => run.Train(progress, cancellation),
            new TrainingProgressOptions { Interactive = context.Interactive, Console = context.Out, PlainOutput = output, Label = "train" }));

        if (!root)
            return result.Status == TrainingStatus.NonFinite ? CliApp.Failure : 0; // rank 0 reports, draws and samples

        var config = run.Model.Config;
        if (run.Trainer.Profiler is { } profiler)
            ProfileOutput.Write(output, profiler.Report($"train {run.Settings.Preset}: d_model {config.DModel}, {config.NHead} heads, {config.NumLayers} layers, [{run.Settings.BatchSize}, {run.Settings.Context}]"), run.RunFolder, "profile");
        var pictures = new List<string>();
        if (run.Trainer.Metrics.Any(r => double.IsFinite(r.Loss)))
        {
            var lossPlot = Path.Combine(run.RunFolder, "loss.png");
            LossCurvePlot.Save(lossPlot, run.Trainer.Metrics,
                $"{run.Corpus.Name}, {run.Tokenizer.Name} tokens: d_model {config.DModel}, {config.NumLayers} layers, context {run.Settings.Context}",
                baselineLoss: run.Baseline.CrossEntropy, baselineLabel: "unigram baseline (validation)");
            pictures.Add(lossPlot);
        }
        if (result.Status == TrainingStatus.NonFinite)
        {
            context.Error.WriteLine($"error: {result.Message}");
            return CliApp.Failure;
        }
        output.WriteLine(result.Message);
        if (result.Status == TrainingStatus.TimeLimit)
        {
            context.Error.WriteLine(string.Create(c,
                $"warning: the time limit ({TrainingProgress.FormatDuration(run.Settings.TimeLimit!.Value)}) cut the run short at step {result.Step} of {run.Settings.Trainer.Steps}: its results are not those of the whole run. Continue it with --resume {run.RunFolder}."));
        }

        var sampleTokens = parse.GetValue(o.SampleTokens);
        output.WriteLine();
        if (sampleTokens == 0)
        {
            output.WriteLine("Samples: none (--sample-tokens 0), so no attention picture either.");
        }
        else
        {
            var prompts = parse.GetValue(o.Prompts) is { Length: > 0 } given ? given : DefaultPrompts.ToArray();
            output.WriteLine(string.Create(c, $"Samples (greedy, then sampled at temperature {LanguageModelRun.SampleTemperature}; ▸ marks the end of the prompt):"));
            var samples = run.Samples(prompts, sampleTokens);
            foreach (var sample in samples)
                output.WriteLine("  " + sample.Line.Replace("\n", " ⏎ ", StringComparison.Ordinal));
            var attention = run.Attention(samples[0], text => AttentionHeatmap.Label(text));
            var attentionPath = Path.Combine(run.RunFolder, "attention.png");
            AttentionHeatmap.SaveGrid(attentionPath, attention.Heads, attention.Queries, attention.Keys, attention.QueryLabels, attention.KeyLabels, attention.Layer,
                title: $"causal self-attention, layer {attention.Layer} of a greedy sample");
            pictures.Add(attentionPath);
        }

        output.WriteLine();
        if (result.Validation is { } v)
        {
            output.WriteLine(string.Create(c,
                $"Validation: loss {v.Loss:F4} nats/token, perplexity {v.Perplexity:F2} — unigram baseline perplexity {run.Baseline.Perplexity:F2} ({run.Baseline.Perplexity / v.Perplexity:F1}× higher)"));
        }
        output.WriteLine(string.Create(c,
            $"Throughput: {result.TokensPerSecond:N0} tokens/s; {result.Step} steps, {run.Trainer.Tokens:N0} training tokens, {TrainingProgress.FormatDuration(TimeSpan.FromSeconds(result.ElapsedSeconds))} training; whole command {TrainingProgress.FormatDuration(wall.Elapsed)}"));
        run.WriteSummary(result, wall.Elapsed, "gpu-transformer " + string.Join(' ', Environment.GetCommandLineArgs().Skip(1)));
        output.WriteLine($"Run folder: {run.RunFolder}");
        output.WriteLine($"  {Checkpoint.FileName}, metrics.csv, metrics.jsonl, {string.Join(", ", pictures.Select(Path.GetFileName))}, {(sampleTokens > 0 ? "samples.txt, " : "")}tokenizer.json, summary.json");
        return 0;
    }

    /// <summary>The context of a rank other than 0: stdout goes nowhere, no live display; stderr stays.</summary>
    private static CliContext Silent(CliContext context) => context with
    {
        Output = TextWriter.Null,
        Out = Spectre.Console.AnsiConsole.Create(new Spectre.Console.AnsiConsoleSettings
        {
            Out = new Spectre.Console.AnsiConsoleOutput(TextWriter.Null),
            Interactive = Spectre.Console.InteractionSupport.No,
        }),
        Interactive = false,
    };

    private static void PrintHeader(CliContext context, LanguageModelRun run)
    {
        var c = CultureInfo.InvariantCulture;
        var output = context.Output;
        var (s, config, tokens, trainer) = (run.Settings, run.Model.Config, run.Tokens, run.Settings.Trainer);
        var d = run.Device.Description;
        output.WriteLine($"Device: {d.BackendName}:{d.IndexInBackend} {d.Name} ({d.Kind}){(d.Kind == DeviceKind.Simulator ? " — the CPU simulator is for correctness, not speed; install PoCL for a fast CPU path" : "")}");
        output.WriteLine(string.Create(c, $"Corpus: {run.Corpus.Name} ({run.Corpus.DocumentCount} documents, {run.Corpus.TotalBytes:N0} bytes); {run.Corpus.SplitRule}"));
        output.WriteLine(string.Create(c,
            $"Tokenizer: {TokenizerFactory.Describe(tokens.Tokenizer)}; tokens train {tokens.Train.Length:N0}, valid {tokens.Valid.Length:N0}, test {tokens.Test.Length:N0}"));
        output.WriteLine(string.Create(c,
            $"Model: d_model {config.DModel}, {config.NHead} heads, {config.NumLayers} layers, d_ff {config.DimFeedforward}, context {s.Context}, dropout {config.Dropout:G3} — {run.Model.ParameterCount():N0} parameters"));
        var o = trainer.Optimizer;
        var clip = double.IsFinite(o.MaxGradNorm) ? o.MaxGradNorm.ToString("G3", c) : "off";
        var limit = trainer.TimeLimit is { } l ? $"; time limit {TrainingProgress.FormatDuration(l)}" : "";
        output.WriteLine(string.Create(c,
            $"Training: preset {s.Preset}; {trainer.Steps:N0} steps × {trainer.Accumulate} × [{s.BatchSize}, {s.Context}] tokens; AdamW (β {o.Beta1:G3}/{o.Beta2:G4}, weight decay {o.WeightDecay:G3}, clip {clip}); {trainer.Schedule.Describe(trainer.Steps)}{limit}"));
        output.WriteLine(string.Create(c, $"Memory: about {DeviceMemory.Format(run.MemoryEstimate)} of {DeviceMemory.Format(DeviceMemory.Capacity(d))} device memory"));
        output.WriteLine(string.Create(c, $"Unigram baseline (validation): {run.Baseline.CrossEntropy:F3} nats/token, perplexity {run.Baseline.Perplexity:F2}"));
        if (run.ResumedFrom is { } checkpoint)
            output.WriteLine(string.Create(c, $"Resuming from step {checkpoint.Step} ({checkpoint.Path})"));
        output.WriteLine($"Run folder: {run.RunFolder}");
    }
}

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

    public Option<int?> DModel { get; } = RunOptions.DModel<int?>().InRange(1, 65_536);

    public Option<int?> Heads { get; } = RunOptions.Heads<int?>().InRange(1, 1024);

    public Option<int?> Layers { get; } = RunOptions.Layers<int?>("Decoder blocks").InRange(1, 1024);

    public Option<int?> FeedForward { get; } = RunOptions.FeedForward<int?>().InRange(1, 1 << 20);

    public Option<bool?> TieWeights { get; } = new("--tie-weights") { Description = "Share the embedding table with the output projection (default: true)" };

    public Option<int?> Context { get; } = new Option<int?>("--context") { Description = "Tokens per training window (= max_seq_len)" }.InRange(1, 1 << 20);

    public Option<int?> BatchSize { get; } = RunOptions.BatchSize<int?>("Windows per micro-batch").InRange(1, 1 << 20);

    public Option<int?> Accumulate { get; } = new Option<int?>("--accumulate") { Description = "Micro-batches per optimizer step (gradient accumulation)" }.InRange(1, 1 << 20);

    public Option<long?> Steps { get; } = RunOptions.Steps<long?>().InRange(1, 1_000_000_000_000);

    public Option<double?> LearningRate { get; } = RunOptions.LearningRate<double?>().AboveUpTo(0, 10);

    public Option<long?> Warmup { get; } = RunOptions.Warmup<long?>().InRange(0, 1_000_000_000_000);

    public Option<double?> MinLearningRate { get; } = new Option<double?>("--min-lr") { Description = "Final learning rate of the cosine schedule (default lr/10)" }.InRange(0, 10);

    public Option<string?> Schedule { get; } = new("--schedule")
    {
        Description = "Learning-rate schedule after the warmup: cosine (default) or inverse-sqrt (the paper's)",
        HelpName = "cosine|inverse-sqrt",
    };

    public Option<double?> WeightDecay { get; } = new Option<double?>("--weight-decay") { Description = "AdamW weight decay (weights only; not biases, norms, embeddings)" }.InRange(0, 10);

    public Option<double?> Clip { get; } = new Option<double?>("--clip") { Description = "Clip the global gradient norm to this (0: off; default 1)" }.InRange(0, 1e9);

    public Option<float?> Dropout { get; } = new Option<float?>("--dropout") { Description = "Dropout probability" }.FromBelow(0, 1);

    public Option<int?> EvaluateEvery { get; } = RunOptions.EvaluateEvery<int?>("Steps between validation evaluations (0: only at the end)").InRange(0, int.MaxValue);

    public Option<int?> EvaluationWindows { get; } = new Option<int?>("--eval-windows") { Description = "Validation windows per evaluation (0: the whole validation split)" }.InRange(0, int.MaxValue);

    public Option<int?> CheckpointEvery { get; } = new Option<int?>("--checkpoint-every") { Description = "Steps between checkpoints (0: only at the end)" }.InRange(0, int.MaxValue);

    public Option<string?> TimeLimit { get; } = RunOptions.TimeLimit();

    public Option<string?> Out { get; } = RunOptions.Out($"Run folder (default {LanguageModelRun.RunsFolder}/<corpus>-<preset>-<time>, with a suffix if taken; on --resume the checkpoint's folder); one that holds a run needs --force");

    public Option<bool> Force { get; } = new("--force") { Description = "Let --out replace a folder that already holds a run" };

    public Option<string?> Resume { get; } = RunOptions.Resume();

    public Option<int> Seed { get; } = RunOptions.Seed<int>("Seed of the initial weights, dropout and training windows").Default(0).InRange(0, int.MaxValue);

    public Option<string[]> Prompts { get; } = new("--prompt")
    {
        Description = "Prompt of the samples printed at the end (repeatable)",
        AllowMultipleArgumentsPerToken = false,
    };

    public Option<int> SampleTokens { get; } = new Option<int>("--sample-tokens") { Description = "Tokens per sample (0: no samples and no attention picture)", DefaultValueFactory = _ => 120 }.InRange(0, 1_000_000);

    public Option<string?> Communicator { get; } = new("--communicator")
    {
        Description = "How ranks talk under mpirun: auto (default: MPI, NCCL on CUDA where libnccl.so.2 loads; one process without mpirun), single, mpi, nccl",
        HelpName = string.Join('|', Communicators.KindNames),
    };

    public Option<bool> Profile { get; } = new("--profile")
    {
        Description = "Time every kernel family, layer and host copy of each step after the first two (slower: each launch waits for the device); writes profile.md/.json/.png into the run folder",
    };

    public TrainOptions()
    {
        Preset.Validators.Add(r => RunOptions.Check(r, () => LanguageModelPresets.Get(r.GetValueOrDefault<string?>() ?? "cpu")));
        Tokenizer.Validators.Add(r => RunOptions.Check(r, () => TokenizerFactory.ParseKind(r.GetValueOrDefault<string?>() ?? "byte")));
        Schedule.Validators.Add(r => RunOptions.Check(r, () => ParseSchedule(r.GetValueOrDefault<string?>())));
        Prompts.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<string[]?>()?.Any(string.IsNullOrWhiteSpace) == true)
                r.AddError("--prompt must hold some text to continue (leave --prompt out for the default prompts).");
        });
        Communicator.Validators.Add(r => RunOptions.Check(r, () => ParseCommunicator(r.GetValueOrDefault<string?>())));
    }

    public void AddTo(Command command)
    {
        Corpus.AddTo(command);
        foreach (Option option in new Option[]
        {
            Preset, Tokenizer, DModel, Heads, Layers, FeedForward, TieWeights, Context, BatchSize, Accumulate, Steps, LearningRate, Warmup, MinLearningRate,
            Schedule, WeightDecay, Clip, Dropout, EvaluateEvery, EvaluationWindows, CheckpointEvery, TimeLimit, Out, Force, Resume, Seed, Prompts, SampleTokens, Communicator, Profile,
        })
        {
            command.Options.Add(option);
        }
    }

    public TimeSpan? ParseTimeLimit(ParseResult parse) => RunOptions.ParseDuration(parse.GetValue(TimeLimit));

    public CommunicatorKind ParseCommunicator(ParseResult parse) => ParseCommunicator(parse.GetValue(Communicator));

    /// <summary>A <see cref="Communicators.KindNames"/> name → its kind; null → auto.</summary>
    internal static CommunicatorKind ParseCommunicator(string? name) =>
        name is null ? CommunicatorKind.Auto
        : Communicators.ParseKind(name) ?? throw new ArgumentException($"Unknown communicator '{name}'. Known: {string.Join(", ", Communicators.KindNames)}.");

    /// <summary>A new run: the preset (named, or the device's default) with the flags on top.</summary>
    public LanguageModelRunSettings FromPreset(ParseResult parse, DeviceDescription device)
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
        return new LanguageModelRunSettings(
            p.Name, TokenizerFactory.ParseKind(parse.GetValue(Tokenizer) ?? p.Tokenizer),
            preset.ModelConfig(vocabularySize: 1) with { TieWeights = parse.GetValue(TieWeights) ?? true },
            parse.GetValue(BatchSize) ?? p.BatchSize, preset.Context, parse.GetValue(Seed), parse.GetValue(EvaluationWindows) ?? p.EvaluationWindows,
            trainer, parse.GetValue(Corpus.Corpus), parse.GetValue(Corpus.SplitSeed), p.TimeLimit);
    }

    /// <summary>
    /// A resumed run: everything from the checkpoint. Flags that would change the run (model, data,
    /// optimizer, schedule) must agree with it; <c>--steps</c> may extend it, the intervals and the time
    /// limit may change (they do not change the losses).
    /// </summary>
    public LanguageModelRunSettings FromCheckpoint(ParseResult parse, CheckpointFile checkpoint)
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
        Same(TieWeights, config.TieWeights);
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
        Same(Corpus.Corpus, corpus.Location, (a, b) => CorpusIdentity.ResolveArgument(a) == CorpusIdentity.ResolveArgument(b));
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
            Schedule = steps == stored.Steps ? schedule : schedule with { TotalSteps = schedule.TotalSteps ?? stored.Steps },
            EvaluateEvery = parse.GetValue(EvaluateEvery) ?? stored.EvaluateEvery,
            CheckpointEvery = parse.GetValue(CheckpointEvery) ?? stored.CheckpointEvery,
        };
        var preset = LanguageModelPresets.All.FirstOrDefault(p => p.Name == presetName);
        return new LanguageModelRunSettings(presetName, checkpoint.Tokenizer().Name, config, task.BatchSize, task.ContextLength, seed,
            parse.GetValue(EvaluationWindows) ?? task.EvaluationWindows, trainer.Validate(), corpus.Location, corpus.SplitSeed, preset?.TimeLimit);
    }

    /// <summary>cosine | inverse-sqrt (also inverse_sqrt, rsqrt) → <see cref="ScheduleOptions.Kind"/>; null: cosine.</summary>
    internal static string ParseSchedule(string? name) => name?.Trim().ToLowerInvariant() switch
    {
        null or "" or "cosine" => ScheduleOptions.Cosine,
        "inverse-sqrt" or "inverse_sqrt" or "rsqrt" or "noam" => ScheduleOptions.InverseSqrt,
        _ => throw new ArgumentException($"Unknown schedule '{name}'. Known: cosine, inverse-sqrt."),
    };
}
