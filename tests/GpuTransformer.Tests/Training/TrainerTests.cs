using System.Text.Json.Nodes;
using GpuTransformer.Training.Reporting;
using GpuTransformer.Training.Runs;
using GpuTransformer.Training.Schedules;

namespace GpuTransformer.Tests.Training;

/// <summary>A tiny byte-level language model on the committed corpus fixture, cheap on every backend.</summary>
internal static class TinyRun
{
    private static readonly Lazy<(TextCorpus Corpus, TokenizedCorpus Tokens)> Data = new(() =>
    {
        var corpus = Corpora.Load(Fixtures.SotuMini);
        return (corpus, TokenizedCorpus.Create(corpus, new ByteTokenizer()));
    });

    public const int Batch = 2;
    public const int Context = 8;

    public static TokenizedCorpus Tokens => Data.Value.Tokens;

    public static LanguageModelConfig Config(float dropout) => new()
    {
        DModel = 16,
        NHead = 2,
        NumLayers = 1,
        DimFeedforward = 32,
        Dropout = dropout,
        VocabularySize = Tokens.Tokenizer.VocabularySize,
        MaxSequenceLength = Context,
        EmbeddingInit = LanguageModelConfig.ScaledNormalEmbeddingInit,
    };

    /// <summary>A fresh model (seeded, embedding started N(0, 1/d_model) for training) and its task.</summary>
    public static (LanguageModel Model, LanguageModelTask Task) Create(ComputeDevice device, float dropout = 0.1f, int seed = 3, int batch = Batch)
    {
        var model = new LanguageModel(device, Config(dropout), seed);
        var (corpus, tokens) = Data.Value;
        var task = new LanguageModelTask(model, tokens, CorpusIdentity.Of(corpus, Fixtures.SotuMini, CorpusSplitter.DefaultSeed, tokens),
            batch, Context, dataSeed: 11, evaluationWindows: 4);
        return (model, task);
    }

    public static TrainerOptions Options(long steps, string? checkpoint = null, int checkpointEvery = 0) => new()
    {
        Steps = steps,
        EvaluateEvery = 3,
        CheckpointEvery = checkpointEvery,
        CheckpointPath = checkpoint,
        Schedule = new ScheduleOptions { LearningRate = 1e-2, WarmupSteps = 2, MinLearningRate = 1e-3 },
    };

    public static float[] Weights(Module model) => model.Parameters().SelectMany(p => p.Value.ToArray()).ToArray();
}

/// <summary>The training loop: exact resume, divergence handling, accumulation, schedule wiring, time limit.</summary>
[Collection(DeviceCollection.Name)]
public sealed class TrainerTests(Devices devices)
{
    /// <summary>
    /// Stops the run at a step through the trainer's normal exit: like Ctrl+C, a cancellation
    /// requested while step k − 1 is reported makes step k the last one (final evaluation, checkpoint).
    /// </summary>
    private sealed class StopAt(long step, CancellationTokenSource source) : ITrainingProgress
    {
        public void Report(ProgressUpdate update)
        {
            if (update.Step >= step - 1)
                source.Cancel();
        }

        public void Log(string line)
        {
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void A_run_stopped_and_resumed_gives_bit_identical_losses_weights_and_dropout_state(string backend)
    {
        var device = devices.Get(backend);
        using var folder = new TempFolder();
        const int Steps = 8;

        // Uninterrupted.
        var (fullModel, fullTask) = TinyRun.Create(device);
        using var fullModelScope = fullModel;
        using var full = new Trainer(fullTask, TinyRun.Options(Steps) with { Accumulate = 2 });
        var fullResult = full.Run();
        Assert.Equal(TrainingStatus.Completed, fullResult.Status);

        // Stopped after step 5 (final evaluation and checkpoint), then resumed by a new model and trainer.
        var path = Path.Combine(folder.Path, Checkpoint.FileName);
        var (firstModel, firstTask) = TinyRun.Create(device);
        List<MetricsRecord> history;
        using (firstModel)
        using (var first = new Trainer(firstTask, TinyRun.Options(Steps, path) with { Accumulate = 2 }))
        using (var stop = new CancellationTokenSource())
        {
            var stopped = first.Run(new StopAt(5, stop), stop.Token);
            Assert.Equal(TrainingStatus.Cancelled, stopped.Status);
            Assert.Equal(5, stopped.Step);
            Assert.Equal(5, stopped.CheckpointStep);
            history = [.. first.Metrics, new MetricsRecord(6, 0, 9, 9, 9, 0, 0)]; // the log, with a step after the checkpoint that is done again
        }
        var (secondModel, secondTask) = TinyRun.Create(device, seed: 99); // other initial weights: all must come from the checkpoint
        using var secondModelScope = secondModel;
        using var second = new Trainer(secondTask, TinyRun.Options(Steps, path) with { Accumulate = 2 });
        second.Restore(Checkpoint.Read(folder.Path), history);
        Assert.Equal(5, second.Step);
        Assert.Equal(5, second.Metrics.Count);
        var resumed = second.Run();
        Assert.Equal(TrainingStatus.Completed, resumed.Status);

        Assert.Equal(Steps, second.Metrics.Count);
        Assert.Equal(full.Metrics.Select(r => r.Loss), second.Metrics.Select(r => r.Loss));
        Assert.Equal(full.Metrics.Select(r => r.GradNorm), second.Metrics.Select(r => r.GradNorm));
        Assert.Equal(full.Metrics.Select(r => r.LearningRate), second.Metrics.Select(r => r.LearningRate));
        // Step 5 of the stopped run has its final evaluation; the uninterrupted run evaluates at 3, 6 and 8 only.
        Assert.Equal(full.Metrics.Where(r => r.Step != 5).Select(r => r.ValLoss), second.Metrics.Where(r => r.Step != 5).Select(r => r.ValLoss));
        Assert.Equal(3, full.Metrics.Count(r => r.ValLoss is not null));
        Assert.Equal(full.Tokens, second.Tokens);
        Assert.Equal(Bitwise.Bits(TinyRun.Weights(fullModel)), Bitwise.Bits(TinyRun.Weights(secondModel)));
        Assert.Equal(fullModel.RandomState, secondModel.RandomState);
        Assert.NotEqual(0UL, fullModel.RandomState.Offset); // dropout was drawn
        Assert.Equal(Steps, full.Optimizer.StepCount);
        Assert.Equal(Steps, second.Optimizer.StepCount);
    }

    [Fact]
    public void Without_the_dropout_state_the_resumed_run_differs()
    {
        // Guards the test above: the dropout stream matters, so restoring it is what makes the runs equal.
        var device = devices.Get(Devices.Available.Contains("opencl") ? "opencl" : "cpu");
        using var folder = new TempFolder();
        var path = Path.Combine(folder.Path, Checkpoint.FileName);
        var (model, task) = TinyRun.Create(device);
        using (model)
        using (var trainer = new Trainer(task, TinyRun.Options(6, path)))
        using (var stop = new CancellationTokenSource())
            trainer.Run(new StopAt(3, stop), stop.Token);

        var losses = new List<double[]>();
        foreach (var restoreDropout in new[] { true, false })
        {
            var (m, t) = TinyRun.Create(device);
            using var scope = m;
            using var trainer = new Trainer(t, TinyRun.Options(6));
            var checkpoint = Checkpoint.Read(path);
            trainer.Restore(checkpoint);
            if (!restoreDropout)
                m.RandomState = new DropoutState(m.RandomState.Seed, 0);
            trainer.Run();
            losses.Add(trainer.Metrics.Where(r => r.Step > 3).Select(r => r.Loss).ToArray());
            Assert.Equal(3, losses[^1].Length);
        }
        Assert.NotEqual(losses[0], losses[1]);
    }

    [Fact]
    public void A_diverging_run_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint()
    {
        var device = devices.Get(Devices.Available.Contains("opencl") ? "opencl" : "cpu");
        using var folder = new TempFolder();
        var path = Path.Combine(folder.Path, Checkpoint.FileName);
        var (model, task) = TinyRun.Create(device, dropout: 0);
        using var modelScope = model;
        // Sane for four steps, then an absurd learning rate: the weights overflow and the next loss is not finite.
        var schedule = new Absurd(afterStep: 4);
        using var trainer = new Trainer(task, TinyRun.Options(12, path, checkpointEvery: 2), schedule: schedule);
        var result = trainer.Run();

        Assert.Equal(TrainingStatus.NonFinite, result.Status);
        Assert.InRange(result.Step, 5, 6);
        Assert.StartsWith("Training diverged: ", result.Message);
        Assert.Contains("Lower the learning rate", result.Message);
        Assert.Contains($"The last good checkpoint (step 4) is kept at '{path}'", result.Message);
        Assert.Equal(4, result.CheckpointStep);

        var checkpoint = Checkpoint.Read(path);
        Assert.Equal(4, checkpoint.Step);
        Assert.False(checkpoint.File.Metadata.ContainsKey(Checkpoint.MetricsKey), "the metrics history lives in the run's log, not in the checkpoint");
        var (fresh, freshTask) = TinyRun.Create(device, dropout: 0);
        using var freshScope = fresh;
        checkpoint.LoadModel(fresh);
        Assert.All(TinyRun.Weights(fresh), w => Assert.True(float.IsFinite(w)));
        Assert.True(double.IsFinite(freshTask.Evaluate().Loss));
    }

    private sealed class Absurd(long afterStep) : ILearningRateSchedule
    {
        public double At(long step) => step <= afterStep ? 1e-3 : 1e30;
    }

    [Fact]
    public void A_checkpoint_with_non_finite_weights_is_refused_and_the_previous_file_kept()
    {
        var device = devices.Get(Devices.Available.Contains("opencl") ? "opencl" : "cpu");
        using var folder = new TempFolder();
        var path = Path.Combine(folder.Path, Checkpoint.FileName);
        var (model, task) = TinyRun.Create(device, dropout: 0);
        using var modelScope = model;
        using var trainer = new Trainer(task, TinyRun.Options(2, path));
        trainer.Run();
        var before = File.ReadAllBytes(path);

        var weight = model.Layers[0].FeedForward.Linear1.Weight;
        var values = weight.Value.ToArray();
        values[5] = float.NaN;
        weight.Value.CopyFrom(values);
        var e = Assert.Throws<NonFiniteStateException>(() => trainer.SaveCheckpoint(path));
        Assert.Contains("'layers.0.linear1.weight' holds NaN at index 5 at step 2", e.Message);
        Assert.Equal(before, File.ReadAllBytes(path));
    }

    [Fact]
    public void Gradient_accumulation_of_k_micro_batches_equals_one_batch_of_k_times_the_rows()
    {
        var device = devices.Get(Devices.Available.Contains("opencl") ? "opencl" : "cpu");
        var stream = TinyRun.Tokens.Train;
        const int Rows = 6;
        const int K = 3;
        var (inputs, targets) = (new int[Rows * TinyRun.Context], new int[Rows * TinyRun.Context]);
        for (var r = 0; r < Rows; r++)
        {
            stream.AsSpan(100 + (r * 37), TinyRun.Context).CopyTo(inputs.AsSpan(r * TinyRun.Context));
            stream.AsSpan(101 + (r * 37), TinyRun.Context).CopyTo(targets.AsSpan(r * TinyRun.Context));
        }
        TokenIds Rows_(int[] ids, int first, int count) =>
            new(ids.AsMemory(first * TinyRun.Context, count * TinyRun.Context), count, TinyRun.Context);

        var one = new FixedBatches(device, [(Rows_(inputs, 0, Rows), Rows_(targets, 0, Rows))]);
        var split = new FixedBatches(device, Enumerable.Range(0, K)
            .Select(i => (Rows_(inputs, i * (Rows / K), Rows / K), Rows_(targets, i * (Rows / K), Rows / K))).ToList());
        using var oneModel = one.Model;
        using var splitModel = split.Model;
        var options = TinyRun.Options(1) with { EvaluateEvery = 0 };
        using var oneTrainer = new Trainer(one, options);
        using var splitTrainer = new Trainer(split, options with { Accumulate = K });
        oneTrainer.Run();
        splitTrainer.Run();

        Assert.Equal(oneTrainer.Metrics[0].Loss, splitTrainer.Metrics[0].Loss, 5);
        Assert.Equal(oneTrainer.Tokens, splitTrainer.Tokens);
        Assert.Equal(K, split.Calls);
        foreach (var (a, b) in one.Model.Parameters().Zip(split.Model.Parameters()))
            TestTensors.AssertClose(a.Gradient.ToArray(), b.Gradient.ToArray(), atol: 1e-6, rtol: 1e-4, $"gradient of {a.Name}");
        Assert.Equal(oneTrainer.Metrics[0].GradNorm, splitTrainer.Metrics[0].GradNorm, 4);
        TestTensors.AssertClose(TinyRun.Weights(one.Model), TinyRun.Weights(split.Model), atol: 1e-5, rtol: 1e-4, "weights after the step");
    }

    /// <summary>A task serving the same micro-batches in turn (what the encoder–decoder task or a test needs from <see cref="ITrainingTask"/>).</summary>
    private sealed class FixedBatches(ComputeDevice device, IReadOnlyList<(TokenIds Inputs, TokenIds Targets)> batches) : ITrainingTask
    {
        public LanguageModel Model { get; } = CreateModel(device);

        IModel ITrainingTask.Model => Model;

        public int Calls { get; private set; }

        public MicroBatchResult TrainMicroBatch(float gradientScale)
        {
            var (inputs, targets) = batches[Calls++ % batches.Count];
            return Model.TrainStep(new ModelBatch(inputs, targets), gradientScale);
        }

        public EvaluationResult Evaluate() => new(0, 0);

        public string SaveDataState() => Calls.ToString(System.Globalization.CultureInfo.InvariantCulture);

        public void RestoreDataState(string state) => Calls = int.Parse(state, System.Globalization.CultureInfo.InvariantCulture);

        public IReadOnlyDictionary<string, string> Metadata() => new Dictionary<string, string>();

        private static LanguageModel CreateModel(ComputeDevice device) => new(device, TinyRun.Config(dropout: 0), seed: 5);
    }

    [Fact]
    public void Each_step_uses_the_schedules_learning_rate_and_the_options_survive_the_checkpoint()
    {
        var device = devices.Get(Devices.Available.Contains("opencl") ? "opencl" : "cpu");
        using var folder = new TempFolder();
        var path = Path.Combine(folder.Path, Checkpoint.FileName);
        foreach (var schedule in new[]
        {
            new ScheduleOptions { Kind = ScheduleOptions.Cosine, LearningRate = 4e-3, WarmupSteps = 3, MinLearningRate = 1e-4 },
            new ScheduleOptions { Kind = ScheduleOptions.InverseSqrt, LearningRate = 4e-3, WarmupSteps = 4 },
        })
        {
            var (model, task) = TinyRun.Create(device);
            using var modelScope = model;
            var options = TinyRun.Options(9, path) with { Schedule = schedule };
            using var trainer = new Trainer(task, options);
            trainer.Run();
            var expected = Enumerable.Range(1, 9).Select(s => schedule.Kind == ScheduleOptions.Cosine
                ? LearningRateSchedules.WarmupCosine(s, 4e-3, 3, 9, 1e-4)
                : 4e-3 * Math.Min(s / 4.0, Math.Sqrt(4.0 / s)));
            Assert.Equal(expected.Select(v => Math.Round(v, 12)), trainer.Metrics.Select(r => Math.Round(r.LearningRate, 12)));
            Assert.Equal(4e-3, trainer.Metrics.Max(r => r.LearningRate), 12);

            var stored = Checkpoint.Read(path).TrainerOptions();
            Assert.Equal(options with { CheckpointPath = null }, stored);
        }
    }

    [Fact]
    public void The_time_limit_ends_training_early_with_a_final_evaluation_and_checkpoint()
    {
        var device = devices.Get(Devices.Available.Contains("opencl") ? "opencl" : "cpu");
        using var folder = new TempFolder();
        var path = Path.Combine(folder.Path, Checkpoint.FileName);
        var (model, task) = TinyRun.Create(device);
        using var modelScope = model;
        using var trainer = new Trainer(task, TinyRun.Options(1000, path) with { EvaluateEvery = 0, TimeLimit = TimeSpan.FromMilliseconds(1) });
        var result = trainer.Run();

        Assert.Equal(TrainingStatus.TimeLimit, result.Status);
        Assert.Equal(1, result.Step);
        Assert.Contains("Stopped at step 1 of 1000: the time limit", result.Message);
        Assert.NotNull(result.Validation);
        Assert.NotNull(trainer.Metrics[^1].ValLoss);
        Assert.Equal(1, Checkpoint.Read(path).Step);
    }

    private static LanguageModelRunSettings RunSettings(string folder, long steps) =>
        new("tiny", "byte", TinyRun.Config(dropout: 0.1f), TinyRun.Batch, TinyRun.Context, Seed: 3, EvaluationWindows: 4,
            TinyRun.Options(steps), Fixtures.SotuMini, CorpusSplitter.DefaultSeed, TimeLimit: null)
        {
            RunFolder = folder,
        };

    /// <summary><see cref="LanguageModelRun"/> called from C# as a user would, without the CLI, and resumed from its checkpoint in its folder.</summary>
    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void A_language_model_run_trains_samples_draws_and_summarises_into_its_folder_and_resumes_there(string backend)
    {
        using var folder = new TempFolder();
        var device = devices.Get(backend);
        TrainingResult first;
        using (var run = LanguageModelRun.Start(device, RunSettings(folder.Path, steps: 3)))
        {
            Assert.Equal(run.Tokenizer.VocabularySize, run.Model.Config.VocabularySize);
            Assert.Equal(Path.Combine(folder.Path, Checkpoint.FileName), run.Settings.Trainer.CheckpointPath);
            first = run.Train();
            Assert.Equal(TrainingStatus.Completed, first.Status);
            Assert.Equal(3, first.Step);

            var samples = run.Samples(["We must"], maxTokens: 4);
            Assert.Equal(["greedy", "sampled"], samples.Select(s => s.Label));
            Assert.All(samples, s => Assert.InRange(s.Generated.GeneratedIds.Length, 1, 4));
            Assert.StartsWith("[greedy] We must▸", File.ReadAllText(Path.Combine(folder.Path, "samples.txt")), StringComparison.Ordinal);

            var map = run.Attention(samples[0], text => text);
            Assert.Equal(run.Model.Config.NumLayers - 1, map.Layer);
            Assert.Equal(run.Model.Config.NHead, map.Heads.Count);
            Assert.InRange(map.Queries, 2, TinyRun.Context);

            run.WriteSummary(first, TimeSpan.FromSeconds(1), "test");
            var summary = JsonNode.Parse(File.ReadAllText(Path.Combine(folder.Path, "summary.json")))!;
            Assert.Equal(3, summary["steps"]!.GetValue<long>());
            Assert.Equal(first.Validation!.Value.Loss, summary["val_loss"]!.GetValue<double>());
        }
        Assert.True(File.Exists(Path.Combine(folder.Path, "tokenizer.json")));

        // Resumed from its checkpoint, the run continues in the checkpoint's folder with the checkpoint's metrics.
        var checkpoint = Checkpoint.Read(folder.Path);
        using var resumed = LanguageModelRun.Start(device, RunSettings(folder.Path, steps: 4) with { RunFolder = null }, checkpoint);
        Assert.Equal(folder.Path, resumed.RunFolder);
        Assert.Same(checkpoint, resumed.ResumedFrom);
        Assert.Equal(3, resumed.Trainer.Step);
        var second = resumed.Train();
        Assert.Equal(4, second.Step);
        Assert.Equal([1L, 2, 3, 4], resumed.Trainer.Metrics.Select(r => r.Step));
    }
}
