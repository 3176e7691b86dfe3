using GpuTransformer.Training.Tasks;

namespace GpuTransformer.Tests.Generation;

/// <summary>
/// The translation task under the shared <see cref="Trainer"/>: stopping at the target accuracy,
/// the data position in checkpoints, the checkpoint round trip for inference, and the held-out
/// loss. Tiny models on PoCL when present, else the simulator.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class TranslationTrainingTests(Devices devices)
{
    private static readonly string Backend = Devices.Available.Contains("opencl") ? "opencl" : "cpu";

    private static readonly NumbersToWordsTask Task = new(new NumbersToWordsOptions { MaxDigits = 2, EvaluationSize = 8 });

    private static TransformerConfig Tiny => NumberTranslation.DefaultConfig(Task) with { DModel = 16, NHead = 2, NumEncoderLayers = 1, NumDecoderLayers = 1, DimFeedforward = 16 };

    [Fact]
    public void Training_stops_after_the_check_that_reaches_the_target_and_saves_a_loadable_checkpoint()
    {
        using var folder = new TempFolder();
        var path = Path.Combine(folder.Path, "run", "checkpoint.safetensors");
        using var model = new Transformer(devices.Get(Backend), Tiny, seed: 1);
        var options = new TranslationTrainingOptions { BatchSize = 8, MaxSteps = 40, EvaluateEvery = 2, TargetAccuracy = 0, WarmupSteps = 1 };
        var report = NumberTranslation.Train(model, Task, options, checkpointPath: path);

        Assert.True(report.ReachedTarget);
        Assert.Equal(2, report.FirstAtTarget!.Value.Step);
        // The trainer stops at the step whose check reached the target and checkpoints those weights.
        Assert.Equal(TrainingStatus.TargetReached, report.Result.Status);
        Assert.Equal(2, report.Result.Step);
        Assert.Equal([2L], report.Checks.Select(c => c.Step));
        Assert.All(report.Checks, c => Assert.InRange(c.Accuracy, 0, 1));
        Assert.All(report.Checks, c => Assert.True(c.Loss > 0 && double.IsFinite(c.Loss)));
        Assert.False(model.Training);

        var (loaded, task, checkpoint) = NumberTranslation.Load(devices.Get(Backend), path);
        using (loaded)
        {
            Assert.Equal(2, checkpoint.Step);
            Assert.Equal(Task.Options, task.Options);
            Assert.Equal(model.Config, loaded.Config);
            var before = NumberTranslation.Translate(model, Task, ["7", "42"]);
            Assert.Equal(before, NumberTranslation.Translate(loaded, task, ["7", "42"]));
            Assert.Equal(
                NumberTranslation.HeldOutLoss(model, Task, Task.EvaluationNumbers).Loss,
                NumberTranslation.HeldOutLoss(loaded, task, task.EvaluationNumbers).Loss, 6);
        }
    }

    [Fact]
    public void The_data_position_round_trips_and_a_foreign_one_is_refused()
    {
        using var model = new Transformer(devices.Get(Backend), Tiny);
        var first = new NumbersToWordsTrainingTask(model, Task, batchSize: 4);
        for (var i = 0; i < 3; i++)
            first.TrainMicroBatch(1f);
        var state = first.SaveDataState();
        Assert.Contains("\"step\":3", state);

        var resumed = new NumbersToWordsTrainingTask(model, Task, batchSize: 4);
        resumed.RestoreDataState(state);
        Assert.Equal(state, resumed.SaveDataState());

        var otherBatch = new NumbersToWordsTrainingTask(model, Task, batchSize: 5);
        Assert.Throws<InvalidDataException>(() => otherBatch.RestoreDataState(state));
        var otherTask = new NumbersToWordsTask(Task.Options with { Seed = 1 });
        var otherSeed = new NumbersToWordsTrainingTask(model, otherTask, batchSize: 4);
        Assert.Throws<InvalidDataException>(() => otherSeed.RestoreDataState(state));
        Assert.Throws<InvalidDataException>(() => otherSeed.RestoreDataState("{"));

        var metadata = first.Metadata()[Checkpoint.TaskKey];
        Assert.Contains("\"name\":\"numbers-to-words\"", metadata);
        Assert.Contains("\"batch_size\":4", metadata);
    }

    [Fact]
    public void A_model_that_does_not_fit_the_task_is_refused()
    {
        using var model = new Transformer(devices.Get(Backend), Tiny with { TargetVocabularySize = 20 });
        var error = Assert.Throws<ArgumentException>(() => new NumbersToWordsTrainingTask(model, Task, 4));
        Assert.Contains("are not the task's", error.Message);
        using var shortModel = new Transformer(devices.Get(Backend), Tiny with { MaxSequenceLength = 2 });
        Assert.Throws<ArgumentException>(() => NumberTranslation.Evaluate(shortModel, Task, Task.EvaluationNumbers));
    }
}
