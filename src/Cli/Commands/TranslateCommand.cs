using System.CommandLine;
using System.Globalization;
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Layers;
using GpuTransformer.Reporting;
using GpuTransformer.Training;
using GpuTransformer.Training.Runs;
using GpuTransformer.Training.Tasks;
using Spectre.Console;

namespace GpuTransformer.Cli.Commands;

/// <summary>
/// <c>translate</c>: trains the encoder–decoder Transformer on the built-in numbers-to-words task
/// (<see cref="NumbersToWordsTask"/>: "4072" → "four thousand seventy two") until held-out greedy
/// exact match reaches the target or a step/time limit, evaluates greedy and beam decoding on
/// the held-out set, prints examples and saves a checkpoint; with <c>--input</c> it translates
/// numbers with a trained checkpoint instead.
/// </summary>
public static class TranslateCommand
{
    /// <summary>The command: it trains through <see cref="TranslationRun"/>, or evaluates or translates with a checkpoint.</summary>
    public static Command Create(CliContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var o = new Options();
        var command = new Command(
            "translate",
            "Train the encoder-decoder Transformer on numbers → English words (\"4072\" → \"four thousand seventy two\"), " +
            "report held-out exact match (greedy and beam), save a checkpoint in the run folder; or translate --input with a --checkpoint");
        o.AddTo(command);
        context.SetAction(command, parse => parse.GetValue(o.Input) is { Length: > 0 } inputs
            ? RunTranslate(context, parse, o, inputs)
            : parse.GetValue(o.Evaluate)
                ? RunEvaluation(context, parse, o)
                : RunTraining(context, parse, o));
        return command;
    }

    /// <summary>The options of <c>translate</c>: the words of <c>train</c> for the same things (<see cref="RunOptions"/>).</summary>
    private sealed class Options
    {
        public Option<string?> Checkpoint { get; } = new("--checkpoint")
        {
            Description = "A trained translate checkpoint (a file or a run folder) read by --input and --evaluate",
            HelpName = "path",
        };

        public Option<string[]> Input { get; } = new("--input", "-i")
        {
            Description = "Numbers to translate with the trained --checkpoint (no training), e.g. --input 4072 19",
            AllowMultipleArgumentsPerToken = true,
        };

        public Option<bool> Evaluate { get; } = new("--evaluate")
        {
            Description = "Evaluate the trained --checkpoint on its held-out set (greedy and beam) instead of training",
        };

        public Option<string?> Out { get; } = RunOptions.Out($"Run folder, holding {Training.Checkpoint.FileName} (default {TranslationRun.DefaultRunFolder}; with --resume and no --out the resumed checkpoint is updated in place)");

        public Option<string?> Resume { get; } = RunOptions.Resume();

        public Option<bool> NormFirst { get; } = new("--norm-first") { Description = "Pre-LN layers (default: post-LN as in the paper)" };

        public Option<int> DModel { get; } = RunOptions.DModel<int>().Default(64).InRange(8, 1024);

        public Option<int> Heads { get; } = RunOptions.Heads<int>().Default(4).InRange(1, 64);

        public Option<int> Layers { get; } = RunOptions.Layers<int>("Encoder and decoder layers (each)").Default(2).InRange(1, 24);

        public Option<int> FeedForward { get; } = RunOptions.FeedForward<int>().Default(256).InRange(8, 16384);

        public Option<int> Digits { get; } = new Option<int>("--digits") { Description = "Numbers have up to this many digits", DefaultValueFactory = _ => 6 }.InRange(1, 12);

        public Option<int> BatchSize { get; } = RunOptions.BatchSize<int>("Pairs per step").Default(64).InRange(1, 4096);

        public Option<double> LearningRate { get; } = RunOptions.LearningRate<double>().Default(1e-3).AboveUpTo(0, 1);

        public Option<int> Warmup { get; } = RunOptions.Warmup<int>().Default(100).InRange(0, 1_000_000);

        public Option<long> Steps { get; } = RunOptions.Steps<long>("Step limit (on --resume: of the whole run)").Default(5000).InRange(1, 100_000_000);

        public Option<string?> TimeLimit { get; } = RunOptions.TimeLimit("20m");

        public Option<double> TargetAccuracy { get; } = new Option<double>("--target-accuracy") { Description = "Stop when held-out greedy exact match reaches this (0: at the first check)", DefaultValueFactory = _ => 0.95 }.InRange(0, 1);

        public Option<int> EvaluateEvery { get; } = RunOptions.EvaluateEvery<int>("Steps between held-out checks").Default(100).InRange(1, 1_000_000);

        public Option<int> HeldOut { get; } = new Option<int>("--held-out") { Description = "Held-out numbers evaluated (checks and final)", DefaultValueFactory = _ => 500 }.InRange(1, 100_000);

        public Option<int> Beam { get; } = new Option<int>("--beam") { Description = "Beam width of the beam-search evaluation and of --input (1: greedy)", DefaultValueFactory = _ => 4 }.InRange(1, 64);

        public Option<double> LengthPenalty { get; } = new Option<double>("--length-penalty") { Description = "Beam search length penalty α (GNMT)", DefaultValueFactory = _ => 0.6 }.InRange(0, 10);

        public Option<int> Examples { get; } = new Option<int>("--examples") { Description = "Held-out examples printed", DefaultValueFactory = _ => 10 }.InRange(0, 10_000);

        public Option<int> Seed { get; } = RunOptions.Seed<int>("Seed of the model's initialisation").Default(1);

        public Option<ulong> TaskSeed { get; } = new("--task-seed") { Description = "Seed of the task's train/held-out split and number streams", DefaultValueFactory = _ => new NumbersToWordsOptions().Seed };

        public void AddTo(Command command)
        {
            foreach (var option in new Option[] { Checkpoint, Input, Evaluate, Out, Resume, NormFirst, DModel, Heads, Layers, FeedForward, Digits, BatchSize, LearningRate, Warmup, Steps, TimeLimit, TargetAccuracy, EvaluateEvery, HeldOut, Beam, LengthPenalty, Examples, Seed, TaskSeed })
                command.Options.Add(option);
        }

        /// <summary>The trained checkpoint --input and --evaluate read.</summary>
        public string RequireCheckpoint(ParseResult parse) =>
            parse.GetValue(Checkpoint) ?? throw new ArgumentException($"--input and --evaluate need --checkpoint (a translate checkpoint or run folder, e.g. {TranslationRun.DefaultRunFolder}).");
    }

    private static int RunTraining(CliContext context, ParseResult parse, Options o)
    {
        var console = context.Out;
        var c = CultureInfo.InvariantCulture;
        var taskOptions = new NumbersToWordsOptions
        {
            MaxDigits = parse.GetValue(o.Digits),
            Seed = parse.GetValue(o.TaskSeed),
            EvaluationSize = parse.GetValue(o.HeldOut),
        };
        var settings = new TranslationRunSettings(
            taskOptions,
            NumberTranslation.DefaultConfig(new NumbersToWordsTask(taskOptions), parse.GetValue(o.NormFirst)) with
            {
                DModel = parse.GetValue(o.DModel),
                NHead = parse.GetValue(o.Heads),
                NumEncoderLayers = parse.GetValue(o.Layers),
                NumDecoderLayers = parse.GetValue(o.Layers),
                DimFeedforward = parse.GetValue(o.FeedForward),
            },
            new TranslationTrainingOptions
            {
                BatchSize = parse.GetValue(o.BatchSize),
                LearningRate = parse.GetValue(o.LearningRate),
                WarmupSteps = parse.GetValue(o.Warmup),
                MaxSteps = parse.GetValue(o.Steps),
                TimeLimit = RunOptions.ParseDuration(parse.GetValue(o.TimeLimit)) ?? TimeSpan.MaxValue,
                TargetAccuracy = parse.GetValue(o.TargetAccuracy),
                EvaluateEvery = parse.GetValue(o.EvaluateEvery),
            }.Validate(),
            parse.GetValue(o.Seed),
            parse.GetValue(o.Out));
        // On resume the run continues as saved: its task and model shape come from the checkpoint.
        var resume = parse.GetValue(o.Resume) is { } resumePath ? Training.Checkpoint.Read(resumePath) : null;

        using var device = ComputeDevice.Create(context.Backend(parse), context.DeviceOptions(parse));
        using var run = TranslationRun.Start(device, settings, resume);
        var (task, config, training, model) = (run.Task, run.Settings.Model, run.Settings.Training, run.Model);
        if (resume is not null)
            console.MarkupLine(Markup.Escape($"Resuming {resume.Path} at step {resume.Step}."));
        console.MarkupLine(Markup.Escape($"Task {NumbersToWordsTask.Name}: numbers of 1–{task.Options.MaxDigits} digits → English words, e.g. 4072 → \"{NumberWords.ToText(4072)}\""));
        console.MarkupLine(Markup.Escape(string.Create(c,
            $"  vocabularies: source {task.Source.Size} (digits), target {task.Target.Size} (words); {task.Options.HeldOutPercent}% of all numbers held out (never trained on), {task.EvaluationNumbers.Count} evaluated; task seed {task.Options.Seed}")));
        console.MarkupLine(Markup.Escape(string.Create(c,
            $"Model: d_model {config.DModel}, {config.NHead} heads, {config.NumEncoderLayers}+{config.NumDecoderLayers} layers, d_ff {config.DimFeedforward}, {(config.NormFirst ? "pre-LN (norm_first)" : "post-LN")}, {model.ParameterCount():N0} parameters, on {device.Description.Name} ({device.Backend})")));
        var limit = training.TimeLimit == TimeSpan.MaxValue ? "" : " / " + TrainingProgress.FormatDuration(training.TimeLimit);
        console.MarkupLine(Markup.Escape(string.Create(c,
            $"Training: batch {training.BatchSize}, AdamW lr {training.LearningRate} (warmup {training.WarmupSteps}), until held-out greedy exact match ≥ {training.TargetAccuracy:P0}, at most {training.MaxSteps} steps{limit}")));

        var report = RunOptions.WithCtrlC(context, cancellation => TrainingProgress.Run(
            training.MaxSteps,
            progress => run.Train(progress, cancellation),
            new TrainingProgressOptions { Interactive = context.Interactive, Console = console, PlainOutput = context.Output, Label = "translate" }));
        console.MarkupLine(Markup.Escape(report.FirstAtTarget is { } reached
            ? string.Create(c, $"Reached {training.TargetAccuracy:P0} held-out greedy exact match ({reached.Accuracy:P1}) at step {reached.Step}, {reached.Elapsed.TotalSeconds:F1} s of training (checks included).")
            : string.Create(c, $"Did not reach {training.TargetAccuracy:P0} held-out greedy exact match in {report.Result.Step} steps, {report.Result.ElapsedSeconds:F1} s.")));
        console.MarkupLine(Markup.Escape(report.Result.Message));
        if (report.Result.Status == TrainingStatus.NonFinite)
            return CliApp.Failure;

        PrintEvaluation(console, run.Evaluate(parse.GetValue(o.Beam), parse.GetValue(o.LengthPenalty), parse.GetValue(o.Examples)));
        console.MarkupLine(Markup.Escape($"Checkpoint: {run.CheckpointPath}. Translate with: gpu-transformer translate --checkpoint {run.CheckpointPath} --input 4072"));
        return 0;
    }

    private static int RunEvaluation(CliContext context, ParseResult parse, Options o)
    {
        var checkpoint = o.RequireCheckpoint(parse);
        using var device = ComputeDevice.Create(context.Backend(parse), context.DeviceOptions(parse));
        var (model, task, _) = NumberTranslation.Load(device, checkpoint);
        using (model)
        {
            context.Out.MarkupLine(Markup.Escape(string.Create(CultureInfo.InvariantCulture,
                $"{checkpoint}: {NumbersToWordsTask.Name}, 1–{task.Options.MaxDigits} digits, {(model.Config.NormFirst ? "pre-LN" : "post-LN")}, {model.ParameterCount():N0} parameters, on {device.Description.Name}")));
            PrintEvaluation(context.Out, TranslationRun.Evaluate(model, task, parse.GetValue(o.Beam), parse.GetValue(o.LengthPenalty), parse.GetValue(o.Examples)));
        }
        return 0;
    }

    /// <summary>Held-out exact match per decoding method as a table, then the greedy examples.</summary>
    private static void PrintEvaluation(IAnsiConsole console, IReadOnlyList<TranslationEvaluation> evaluations)
    {
        var c = CultureInfo.InvariantCulture;
        var table = new Table().Border(TableBorder.Rounded).Title("Held-out exact match").AddColumns("decoding", "correct", "exact match", "time");
        foreach (var evaluation in evaluations)
            table.AddRow(evaluation.Method, $"{evaluation.Correct}/{evaluation.Total}", evaluation.Accuracy.ToString("P1", c), $"{evaluation.Elapsed.TotalSeconds.ToString("F1", c)} s");
        console.Write(table);
        WriteExamples(console, evaluations[0].Examples);
    }

    private static int RunTranslate(CliContext context, ParseResult parse, Options o, string[] inputs)
    {
        var checkpoint = o.RequireCheckpoint(parse);
        using var device = ComputeDevice.Create(context.Backend(parse), context.DeviceOptions(parse));
        var (model, task, _) = NumberTranslation.Load(device, checkpoint);
        using (model)
        {
            foreach (var input in inputs)
                task.EncodeSource(input); // every input checked before any decoding
            var beam = parse.GetValue(o.Beam);
            var outputs = NumberTranslation.Translate(model, task, inputs, beam, parse.GetValue(o.LengthPenalty));
            for (var i = 0; i < inputs.Length; i++)
            {
                var number = long.Parse(inputs[i].Trim(), CultureInfo.InvariantCulture);
                var expected = NumberWords.ToText(number);
                var mark = outputs[i] == expected ? "✓" : $"✗ (expected: {expected})";
                context.Output.WriteLine($"{inputs[i].Trim()} → {outputs[i]}  {mark}");
            }
        }
        return 0;
    }

    private static void WriteExamples(IAnsiConsole console, IReadOnlyList<TranslationExample> examples)
    {
        if (examples.Count == 0)
            return;
        console.MarkupLine("Held-out examples (greedy):");
        foreach (var e in examples)
        {
            var line = e.Correct ? $"  {e.Input} → {e.Output}  ✓" : $"  {e.Input} → {e.Output}  ✗ (expected: {e.Expected})";
            console.MarkupLine(Markup.Escape(line));
        }
    }
}
