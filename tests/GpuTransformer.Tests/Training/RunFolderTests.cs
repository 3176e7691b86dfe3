using GpuTransformer.Cli;
using GpuTransformer.Training.Reporting;

namespace GpuTransformer.Tests.Training;

/// <summary>
/// Runs and their folders: <c>--out</c> never replaces a run without <c>--force</c>, default folders
/// never collide, a resume refuses another corpus by content and keeps the learning-rate schedule when
/// <c>--steps</c> grows, and a time limit that cuts a run short says so.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class RunFolderTests
{
    private static string[] Tiny(string folder, params string[] overrides) => TrainCommandTests.Tiny(CliRuns.Backend, folder, overrides);

    [Fact]
    public void Out_refuses_an_existing_run_unless_forced()
    {
        using var folder = new TempFolder();
        var (code, output, error) = TrainCommandTests.Run(Tiny(folder.Path, "--steps", "2", "--sample-tokens", "2"));
        Assert.True(code == 0, error + output);
        var before = File.ReadAllBytes(Path.Combine(folder.Path, Checkpoint.FileName));

        (code, output, error) = TrainCommandTests.Run(Tiny(folder.Path, "--steps", "2", "--sample-tokens", "2", "--corpus", "/nonexistent/gt-corpus"));
        Assert.Equal(CliApp.Failure, code);
        CliRuns.AssertOneLineError(error, $"--out '{folder.Path}' already holds a run (checkpoint.safetensors, metrics.csv, metrics.jsonl, summary.json): pass --force to replace it");
        Assert.Equal(before, File.ReadAllBytes(Path.Combine(folder.Path, Checkpoint.FileName)));

        (code, output, error) = TrainCommandTests.Run([.. Tiny(folder.Path, "--steps", "3", "--sample-tokens", "2"), "--force"]);
        Assert.True(code == 0, error + output);
        Assert.Equal(3, Checkpoint.Read(folder.Path).Step);
        Assert.Equal(new long[] { 1, 2, 3 }, MetricsLogger.ReadJsonl(Path.Combine(folder.Path, "metrics.jsonl")).Select(r => r.Step));
    }

    [Fact]
    public void Default_run_folders_started_together_never_collide()
    {
        using var parent = new TempFolder();
        var folders = Enumerable.Range(0, 16).AsParallel().Select(_ => RunFolder.CreateUnique(parent.Path, "sotu-cpu-20261205-120000")).ToList();
        Assert.Equal(16, folders.Distinct().Count());
        Assert.Contains(Path.Combine(parent.Path, "sotu-cpu-20261205-120000"), folders);
        Assert.Contains(Path.Combine(parent.Path, "sotu-cpu-20261205-120000-16"), folders);
    }

    [Fact]
    public void Resume_refuses_a_different_corpus_of_the_same_length_and_finds_its_corpus_from_anywhere()
    {
        using var corpus = new TempFolder();
        foreach (var file in Directory.GetFiles(Fixtures.SotuMini))
            File.Copy(file, Path.Combine(corpus.Path, Path.GetFileName(file)));
        using var run = new TempFolder();
        var (code, output, error) = TrainCommandTests.Run(Tiny(run.Path, "--steps", "2", "--sample-tokens", "2", "--corpus", corpus.Path));
        Assert.True(code == 0, error + output);
        var identity = Checkpoint.Read(run.Path).Corpus();
        Assert.True(Path.IsPathFullyQualified(identity.Argument), identity.Argument);
        Assert.Equal(64, identity.ContentSha256?.Length);

        // One letter changed: same length, same token counts, another text.
        var victim = Directory.GetFiles(corpus.Path).Order(StringComparer.Ordinal).First();
        var text = File.ReadAllText(victim);
        var at = text.IndexOf('e', StringComparison.Ordinal);
        File.WriteAllText(victim, string.Concat(text.AsSpan(0, at), "a", text.AsSpan(at + 1)));
        (code, output, error) = TrainCommandTests.Run("train", "--backend", CliRuns.Backend, "--opencl-portable", "--resume", run.Path, "--sample-tokens", "2");
        Assert.Equal(CliApp.Failure, code);
        CliRuns.AssertOneLineError(error, $"The corpus '{corpus.Path}' is not the text this run trained on");
        Assert.DoesNotContain("Resuming from step", output);
    }

    [Fact]
    public void Resume_with_more_steps_keeps_the_schedule_instead_of_jumping_the_learning_rate()
    {
        using var folder = new TempFolder();
        var (code, output, error) = TrainCommandTests.Run(Tiny(folder.Path, "--steps", "4", "--warmup", "1", "--sample-tokens", "2"));
        Assert.True(code == 0, error + output);
        var first = MetricsLogger.ReadJsonl(Path.Combine(folder.Path, "metrics.jsonl"));
        (code, output, error) = TrainCommandTests.Run("train", "--backend", CliRuns.Backend, "--opencl-portable", "--resume", folder.Path, "--steps", "7", "--sample-tokens", "2");
        Assert.True(code == 0, error + output);
        // The history comes back from the run's log (not the checkpoint): the first four records are kept as they were.
        var all = MetricsLogger.ReadJsonl(Path.Combine(folder.Path, "metrics.jsonl"));
        Assert.Equal(first, all.Take(4));
        Assert.Equal(8, File.ReadAllLines(Path.Combine(folder.Path, "metrics.csv")).Length);
        Assert.Contains("cosine to 0.0003 at step 4 (the run's original length), then constant to step 7", output);
        var lr = MetricsLogger.ReadJsonl(Path.Combine(folder.Path, "metrics.jsonl")).Select(r => r.LearningRate).ToList();
        Assert.Equal(7, lr.Count);
        Assert.Equal(3e-4, lr[3], 12); // the end of the original cosine
        Assert.All(lr.Skip(4), v => Assert.Equal(3e-4, v, 12)); // constant after it, not back up the cosine of a 7-step run
        Assert.Equal(4, Checkpoint.Read(folder.Path).TrainerOptions().Schedule.TotalSteps);
    }

    [Fact]
    public void A_time_limit_that_cuts_the_run_short_says_so()
    {
        using var folder = new TempFolder();
        var (code, output, error) = TrainCommandTests.Run(Tiny(folder.Path, "--steps", "500", "--time-limit", "0.001s", "--sample-tokens", "2"));
        Assert.True(code == 0, error + output);
        Assert.Contains("Stopped at step 1 of 500: the time limit", output);
        Assert.Contains($"warning: the time limit (", error);
        Assert.Contains($"cut the run short at step 1 of 500: its results are not those of the whole run. Continue it with --resume {folder.Path}.", error);
    }

    [Fact]
    public void The_cpu_preset_is_defined_by_its_steps_with_a_generous_safety_net()
    {
        var cpu = LanguageModelPresets.Cpu;
        Assert.Equal(2800, cpu.Steps);
        // 2,800 steps at 0.11 s a step (the measured 0.10 s: 2,800 in 4 min 42 s) take 5 min 8 s: the limit must leave room for a machine ten times slower.
        Assert.True(cpu.TimeLimit >= TimeSpan.FromSeconds(10 * 0.11 * cpu.Steps), $"{cpu.TimeLimit}");
    }
}
