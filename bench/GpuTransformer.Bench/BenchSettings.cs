namespace GpuTransformer.Bench;

/// <summary>Process-wide settings of a benchmark run (benchmarks run in-process, so the parameter sources see them).</summary>
public static class BenchSettings
{
    /// <summary><c>--full</c>: BenchmarkDotNet's default job (more warm-up and iterations) and the larger sizes.</summary>
    public static bool Full { get; set; }
}
