using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Filters;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Toolchains.InProcess.Emit;

namespace GpuTransformer.Bench;

/// <summary>
/// The BenchmarkDotNet configuration: in-process (no SDK needed, so the self-contained
/// publish runs it on the GPU machine; one device per backend for the whole run), BDN's
/// ShortRun job by default (3 warm-ups, 3 iterations: the machine is small) or its default
/// job with <c>--full</c>, the throughput column, and the simulator-only-tiny filter.
/// </summary>
public static class BenchConfig
{
    /// <summary>The configuration for a run.</summary>
    public static IConfig Create(bool full)
    {
        var job = (full ? Job.Default : Job.ShortRun)
            .WithToolchain(InProcessEmitToolchain.Instance)
            .WithId(full ? "Full" : "Short");
        return DefaultConfig.Instance
            .AddJob(job)
            .AddColumn(new ThroughputColumn())
            .AddFilter(new SimpleFilter(ThroughputColumn.Runs))
            .WithOptions(ConfigOptions.JoinSummary);
    }
}
