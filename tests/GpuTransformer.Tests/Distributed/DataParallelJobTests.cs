using GpuTransformer.Training.Distributed;
using GpuTransformer.Training.Reporting;

namespace GpuTransformer.Tests.Distributed;

/// <summary>
/// <c>mpirun -np R gpu-transformer train</c> on the CPU simulator with a tiny model (tests/…/sotu-mini):
/// the run equals one process training the same global batch by gradient accumulation; a killed
/// rank ends the job and the last checkpoint resumes; bad input is one error on every rank before
/// training starts. In the device collection: the ranks need both cores.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class DataParallelJobTests(ITestOutputHelper output)
{
    private const string Gt = "gpu-transformer";
    private static readonly TimeSpan JobLimit = TimeSpan.FromMinutes(3);

    /// <summary>The bound on the time from a rank's death to the end of the job (measured 1–2 s for the probe).</summary>
    private static readonly TimeSpan StopLimit = TimeSpan.FromSeconds(30);

    /// <summary>The tiny run on the simulator, dropout off (a data-parallel run draws its masks elsewhere in the stream), 2 micro-batches per step.</summary>
    private static string[] Tiny(string folder, params string[] overrides) =>
        TrainCommandTests.Tiny("cpu", folder, ["--dropout", "0", "--accumulate", "2", "--steps", "3", "--eval-every", "0", "--sample-tokens", "4", .. overrides]);

    [MpiTheory]
    [InlineData(false)]
    [InlineData(true)]
    public void TwoRanksTrainWhatOneProcessTrainsWithTheSameGlobalBatch(bool tiedWeights)
    {
        using var single = new TempFolder();
        using var parallel = new TempFolder();
        var tie = tiedWeights ? "true" : "false";
        var (code, singleOutput, error) = TrainCommandTests.Run(Tiny(single.Path, "--tie-weights", tie));
        Assert.True(code == 0, error + singleOutput);

        using var job = MpiJob.Start(2, Gt, Tiny(parallel.Path, "--tie-weights", tie));
        var exitCode = job.WaitForExit(JobLimit);
        output.WriteLine(job.Output);
        Assert.Equal(0, exitCode);
        Assert.Contains("Data parallel: MPI (Open MPI", job.Output);
        Assert.Contains("each of 2 ranks trains 1 of the 2 micro-batches of a step", job.Output);
        Assert.Single(job.Output.Split('\n'), line => line.StartsWith("Device:", StringComparison.Ordinal)); // rank 1 prints nothing
        Assert.Contains("Trained 3 steps; final evaluation and checkpoint done.", job.Output);

        var expected = MetricsLogger.ReadJsonl(Path.Combine(single.Path, "metrics.jsonl"));
        var actual = MetricsLogger.ReadJsonl(Path.Combine(parallel.Path, "metrics.jsonl"));
        Assert.Equal(expected.Select(r => (r.Step, r.Tokens)), actual.Select(r => (r.Step, r.Tokens)));
        var one = Checkpoint.Read(single.Path);
        var two = Checkpoint.Read(parallel.Path);
        Assert.Equal(1, one.Ranks);
        Assert.Equal(2, two.Ranks);
        // The ranks leave the data stream where one process does: at micro-batch 3 steps × 2.
        Assert.Equal(one.Metadata(Checkpoint.DataStateKey), two.Metadata(Checkpoint.DataStateKey));
        Assert.Equal(one.File.Tensors.Keys.Order(), two.File.Tensors.Keys.Order());

        if (!tiedWeights)
        {
            // Bitwise: each gradient kernel adds its micro-batch's finished sum into the gradient
            // (g = 0 + g₀, then g + g₁), and MPI adds rank 1's gradient to rank 0's: the same g₀ + g₁.
            output.WriteLine("untied weights: losses, gradient norms, weights and AdamW moments compared bitwise");
            Assert.Equal(expected.Select(r => r.Loss), actual.Select(r => r.Loss));
            Assert.Equal(expected.Select(r => r.GradNorm), actual.Select(r => r.GradNorm));
            Assert.Equal(expected[^1].ValLoss, actual[^1].ValLoss);
            foreach (var (name, tensor) in one.File.Tensors)
                Assert.True(tensor.Data.AsSpan().SequenceEqual(two.File.Tensors[name].Data), $"'{name}' differs between one process and two ranks");
        }
        else
        {
            // Not bitwise: the tied table's gradient takes each micro-batch's output-projection part
            // A and embedding part E in turn, so one process adds ((A₀ + E₀) + A₁) + E₁ and two ranks
            // (A₀ + E₀) + (A₁ + E₁). Losses within 1e-6 relative; the weights are not compared: AdamW
            // turns the rounding noise of gradients that are zero in exact arithmetic (the key bias's)
            // into steps of ±lr.
            output.WriteLine("tied weights: losses compared within 1e-6 relative (the reduction order differs, see the comment)");
            for (var i = 0; i < expected.Count; i++)
                Assert.True(Math.Abs(actual[i].Loss - expected[i].Loss) <= 1e-6 * Math.Abs(expected[i].Loss), $"step {i + 1}: loss {actual[i].Loss} on two ranks, {expected[i].Loss} in one process");
        }
    }

    [MpiFact]
    public void ARankKilledMidRunStopsTheOtherAndTheLastCheckpointResumesOnAsManyRanks()
    {
        using var folder = new TempFolder();
        var path = Path.Combine(folder.Path, Checkpoint.FileName);
        using (var job = MpiJob.Start(2, Gt, Tiny(folder.Path, "--steps", "400", "--checkpoint-every", "2")))
        {
            var clock = Stopwatch.StartNew();
            while (!File.Exists(path) && clock.Elapsed < JobLimit && !job.WaitForLine(line => line.StartsWith("Trained", StringComparison.Ordinal), TimeSpan.FromMilliseconds(200)))
            {
            }
            Assert.True(File.Exists(path), $"no checkpoint was written:\n{job.Output}");
            var pid = job.RankProcessId(1) ?? throw new InvalidOperationException($"rank 1 was not found among mpirun's children:\n{job.Output}");
            var killedAt = job.Elapsed;
            Process.GetProcessById(pid).Kill(); // SIGKILL
            var exitCode = job.WaitForExit(StopLimit);
            output.WriteLine($"the job ended {(job.Elapsed - killedAt).TotalSeconds:F1} s after rank 1 was killed\n{job.Output}");
            Assert.NotEqual(0, exitCode);
            Assert.Contains("exited on signal 9 (Killed)", job.Output);
            Assert.DoesNotContain("Trained 400 steps", job.Output);
        }

        var step = Checkpoint.Read(folder.Path).Step;
        Assert.InRange(step, 2, 399);
        Assert.Equal(0, step % 2);

        // One process may not continue a two-rank run.
        var (code, stdout, stderr) = TrainCommandTests.Run("train", "--backend", "cpu", "--resume", folder.Path, "--steps", $"{step + 2}");
        Assert.Equal(1, code);
        Assert.Contains($"was written by a run on 2 rank(s); this one has 1. Resume with the same number of ranks (mpirun -np 2)", stderr);
        Assert.DoesNotContain("train step", stdout);

        using var resumed = MpiJob.Start(2, Gt, "train", "--backend", "cpu", "--resume", folder.Path, "--steps", $"{step + 2}", "--sample-tokens", "4");
        var resumedCode = resumed.WaitForExit(JobLimit);
        output.WriteLine(resumed.Output);
        Assert.Equal(0, resumedCode);
        Assert.Contains($"Resuming from step {step} ", resumed.Output);
        Assert.Contains($"Trained {step + 2} steps; final evaluation and checkpoint done.", resumed.Output);
        Assert.Equal(step + 2, Checkpoint.Read(folder.Path).Step);
    }

    [MpiTheory]
    [InlineData("config", "the ranks disagree on the model config: rank 1 differs from rank 0")]
    [InlineData("corpus", "the ranks disagree on the corpus (name, split, files, token counts): rank 1 differs from rank 0")]
    [InlineData("ranks", "3 ranks but a global batch of 2 sequences (2 micro-batch(es) per step): more ranks than sequences")]
    [InlineData("nccl", "NCCL reduces CUDA device buffers, but this rank's device is cpu:0")]
    [InlineData("library", "Open MPI's libmpi.so.40 was not found (tried /nonexistent/libmpi.so.40): install Open MPI (Debian/Ubuntu: apt-get install openmpi-bin libopenmpi3)")]
    public void BadInputIsOneErrorOnEveryRankBeforeTrainingStarts(string what, string message)
    {
        using var folder = new TempFolder();
        using var otherCorpus = new TempFolder();
        var ranks = what == "ranks" ? 3 : 2;
        // mpirun ends the job when the first rank exits with an error, which may cut a slower rank short
        // before it prints: let every rank finish, so the test sees what each one says (the CLI's exit code 1
        // for bad input is TrainCommandTests' concern).
        string[] letEveryRankFinish = ["--mca", "orte_abort_on_non_zero_status", "0"];
        using var job = what switch
        {
            "config" => MpiJob.StartEach(Gt, letEveryRankFinish, Tiny(folder.Path), Tiny(folder.Path, "--d-model", "32")),
            "corpus" => MpiJob.StartEach(Gt, letEveryRankFinish, Tiny(folder.Path), Tiny(folder.Path, "--corpus", CorpusWithoutOneDocument(otherCorpus.Path))),
            "ranks" => MpiJob.StartWith(letEveryRankFinish, 3, Gt, Tiny(folder.Path, "--batch-size", "1")),
            "nccl" => MpiJob.StartWith(letEveryRankFinish, 2, Gt, Tiny(folder.Path, "--communicator", "nccl")),
            _ => MpiJob.StartWith([.. letEveryRankFinish, "-x", $"{OpenMpiLibrary.LibraryVariable}=/nonexistent/libmpi.so.40"], 2, Gt, Tiny(folder.Path)),
        };
        job.WaitForExit(JobLimit); // 0 with the option above: mpirun reports no failure of its own
        output.WriteLine(job.Output);
        var errors = job.Output.Split('\n').Where(line => line.StartsWith("error: ", StringComparison.Ordinal)).ToList();
        Assert.Equal(ranks, errors.Count(line => line.Contains(message, StringComparison.Ordinal)));
        Assert.Equal(ranks, errors.Count); // one line each, nothing else
        Assert.DoesNotContain("train step", job.Output);
        Assert.DoesNotContain("at System.", job.Output); // no stack trace
    }

    private static string CorpusWithoutOneDocument(string folder)
    {
        foreach (var file in Directory.GetFiles(Fixtures.SotuMini, "*.txt").Order(StringComparer.Ordinal).Skip(1))
            File.Copy(file, Path.Combine(folder, Path.GetFileName(file)));
        return folder;
    }
}
