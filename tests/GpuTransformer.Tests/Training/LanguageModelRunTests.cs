using System.Text.Json.Nodes;
using GpuTransformer.Tests.Infrastructure;
using GpuTransformer.Training;
using GpuTransformer.Training.Data;
using GpuTransformer.Training.Runs;
using Xunit;

namespace GpuTransformer.Tests.Training;

/// <summary>
/// <see cref="LanguageModelRun"/> called from C# as a user would, without the CLI: start, train,
/// samples, attention map, summary, and a resume that continues the run in its folder.
/// A tiny byte model on the corpus fixture; PoCL when present, else the simulator.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class LanguageModelRunTests(Devices devices)
{
    private static readonly string Backend = Devices.Available.Contains("opencl") ? "opencl" : "cpu";

    private static LanguageModelRunSettings Settings(string folder, long steps) =>
        new("tiny", "byte", TinyRun.Config(dropout: 0.1f), TinyRun.Batch, TinyRun.Context, Seed: 3, EvaluationWindows: 4,
            TinyRun.Options(steps), Fixtures.SotuMini, CorpusSplitter.DefaultSeed, TimeLimit: null)
        {
            RunFolder = folder,
        };

    [Fact]
    public void A_run_trains_samples_draws_and_summarises_into_its_folder_and_resumes_there()
    {
        using var folder = new TempFolder();
        var device = devices.Get(Backend);
        TrainingResult first;
        using (var run = LanguageModelRun.Start(device, Settings(folder.Path, steps: 3)))
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
        using var resumed = LanguageModelRun.Start(device, Settings(folder.Path, steps: 4) with { RunFolder = null }, checkpoint);
        Assert.Equal(folder.Path, resumed.RunFolder);
        Assert.Same(checkpoint, resumed.ResumedFrom);
        Assert.Equal(3, resumed.Trainer.Step);
        var second = resumed.Train();
        Assert.Equal(4, second.Step);
        Assert.Equal([1L, 2, 3, 4], resumed.Trainer.Metrics.Select(r => r.Step));
    }
}
