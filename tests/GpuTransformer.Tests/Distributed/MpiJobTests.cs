namespace GpuTransformer.Tests.Distributed;

/// <summary>
/// Real MPI jobs: <c>mpirun</c> starts the probe (tests/GpuTransformer.MpiProbe) on 2 or 3 ranks,
/// each rank checks its own results and prints "rank r/N: ok" or "FAILED"; failures are injected
/// (a rank killed, throwing, aborting, exiting) and the job must end within a bound, with a
/// message that says what happened.
/// </summary>
public sealed class MpiJobTests(ITestOutputHelper output)
{
    private const string Probe = "gpu-transformer-mpi-probe";
    private static readonly TimeSpan JobLimit = TimeSpan.FromMinutes(2);

    /// <summary>The bound on the time from a rank's death to the end of the job (measured: 1–2 s on 2 busy cores).</summary>
    private static readonly TimeSpan StopLimit = TimeSpan.FromSeconds(30);

    [MpiFact]
    public void ThreeRanksSumInRankOrderBitwiseAndEveryCollectiveChecksOut()
    {
        // Three ranks: with two, a + b = b + a and any order passes; with three the order shows in the bits.
        using var job = MpiJob.Start(3, Probe, "collectives", "--communicator", "auto", "--segment", "1000");
        var exitCode = job.WaitForExit(JobLimit);
        output.WriteLine(job.Output);
        Assert.Equal(0, exitCode);
        Assert.DoesNotContain("FAILED", job.Output);
        for (var rank = 0; rank < 3; rank++)
        {
            Assert.Contains($"rank {rank}/3: pid", job.Output);
            Assert.Contains($"MPI (Open MPI", job.Output);
            var ok = job.Output.Split('\n').Single(line => line.StartsWith($"rank {rank}/3: ok:", StringComparison.Ordinal));
            // "ok: 17 checks bitwise; K of M sums differ when added in reverse rank order": K > 0 shows a wrong order would fail.
            var differing = int.Parse(ok.Split("; ")[1].Split(' ')[0]);
            Assert.True(differing > 0, $"no sum depends on the order, so the bitwise check proves nothing: {ok}");
        }
    }

    [MpiTheory]
    [InlineData("auto", "single process")]
    [InlineData("mpi", "MPI (Open MPI")] // an MPI singleton: one rank, no mpirun
    public void WithoutMpirunTheProbeIsOneRank(string kind, string description)
    {
        using var job = MpiJob.StartAlone(Probe, "collectives", "--communicator", kind);
        var exitCode = job.WaitForExit(JobLimit);
        output.WriteLine(job.Output);
        Assert.Equal(0, exitCode);
        Assert.Contains($": {description}", job.Output);
        Assert.Contains("rank 0/1: ok: 17 checks bitwise", job.Output);
    }

    [MpiFact]
    public void BuffersOfDifferentLengthsAndDifferentConfigsFailOnEveryRankWithOneClearError()
    {
        using var job = MpiJob.Start(2, Probe, "mismatch");
        var exitCode = job.WaitForExit(JobLimit);
        output.WriteLine(job.Output);
        Assert.Equal(0, exitCode);
        for (var rank = 0; rank < 2; rank++)
        {
            Assert.Contains($"rank {rank}/2: error as expected: rank {rank}/2: the ranks disagree on the length of the buffer passed to AllReduceSum: rank 0 has 4, rank 1 has 5", job.Output);
            Assert.Contains($"rank {rank}/2: error as expected: rank {rank}/2: the ranks disagree on the training config: rank 1 differs from rank 0", job.Output);
            Assert.Contains($"rank {rank}/2: ok: every rank refused both", job.Output);
        }
    }

    [MpiFact]
    public void ARankKilledMidRunStopsTheOthersWithinSeconds()
    {
        using var job = MpiJob.Start(2, Probe, "loop", "--seconds", "100");
        Assert.True(job.WaitForLine(line => line.StartsWith("rank 1/2: iteration 100", StringComparison.Ordinal), JobLimit),
            $"the ranks did not reach iteration 100:\n{job.Output}");
        var pid = job.Pid(1) ?? throw new InvalidOperationException($"rank 1 printed no pid:\n{job.Output}");
        var killedAt = job.Elapsed;
        System.Diagnostics.Process.GetProcessById(pid).Kill(); // SIGKILL: no cleanup, no message of its own
        var exitCode = job.WaitForExit(StopLimit);
        var stopped = job.Elapsed - killedAt;
        output.WriteLine($"the job ended {stopped.TotalSeconds:F1} s after rank 1 was killed\n{job.Output}");
        Assert.NotEqual(0, exitCode);
        Assert.Contains("rank 0/2: stopped by SIGTERM: the MPI launcher is ending the job", job.Output);
        Assert.Contains("exited on signal 9 (Killed)", job.Output);
        Assert.DoesNotContain("rank 0/2: ok: finished", job.Output);
    }

    [MpiTheory]
    [InlineData("throw", "error: injected failure on rank 1 at iteration 150")]
    [InlineData("abort", "rank 1/2: injected abort at iteration 150")]
    [InlineData("exit", "Exit code:    3")]
    public void ARankThatFailsStopsTheOthersWithinSeconds(string how, string message)
    {
        // "throw" leaves through the communicator's Dispose with the exception in flight: it must not
        // wait for rank 0 (MPI_Finalize would, forever, while rank 0 sits in the next all-reduce).
        using var job = MpiJob.Start(2, Probe, "loop", "--seconds", "100", "--fail-rank", "1", "--fail-at", "150", "--fail-how", how);
        Assert.True(job.WaitForLine(line => line.StartsWith("rank 1/2: iteration 100", StringComparison.Ordinal), JobLimit),
            $"the ranks did not reach iteration 100:\n{job.Output}");
        var exitCode = job.WaitForExit(StopLimit);
        output.WriteLine($"the job ended {job.Elapsed.TotalSeconds:F1} s after it started\n{job.Output}");
        Assert.NotEqual(0, exitCode);
        Assert.Contains(message, job.Output);
        Assert.Contains("rank 0/2: stopped by SIGTERM: the MPI launcher is ending the job", job.Output);
        Assert.DoesNotContain("rank 0/2: ok: finished", job.Output);
    }
}
