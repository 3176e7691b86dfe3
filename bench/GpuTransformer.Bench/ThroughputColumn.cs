using System.Globalization;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using GpuTransformer.Bench.Benchmarks;
using GpuTransformer.Kernels.Workloads;

namespace GpuTransformer.Bench;

/// <summary>
/// GFLOP/s (matmul, attention) or GB/s (memory-bound kernels) of each case, from the
/// measured mean and the work its <see cref="WorkloadSpec.Cost"/> counts.
/// </summary>
public sealed class ThroughputColumn : IColumn
{
    public string Id => nameof(ThroughputColumn);

    public string ColumnName => "Throughput";

    public bool AlwaysShow => true;

    public ColumnCategory Category => ColumnCategory.Custom;

    public int PriorityInCategory => 0;

    public bool IsNumeric => true;

    public UnitType UnitType => UnitType.Dimensionless;

    public string Legend => "GFLOP/s (matmul, attention: FLOPs of the products) or GB/s (memory-bound kernels: fewest bytes read + written) at the measured mean";

    public bool IsAvailable(Summary summary) => true;

    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        ArgumentNullException.ThrowIfNull(summary);
        ArgumentNullException.ThrowIfNull(benchmarkCase);
        var meanNanoseconds = summary[benchmarkCase]?.ResultStatistics?.Mean;
        var spec = SpecOf(benchmarkCase);
        if (meanNanoseconds is not > 0 || spec is null)
            return "-";
        if (Equals(benchmarkCase.Parameters["Backend"], BenchDevices.Simulator))
            return "n/a (simulator)";
        var cost = spec.Cost;
        var rate = cost.Rate(meanNanoseconds.Value * 1e-9);
        return $"{rate.ToString(rate >= 100 ? "F0" : "F2", CultureInfo.InvariantCulture)} {cost.UnitName}";
    }

    /// <summary>The workload of a case (no device needed).</summary>
    public static WorkloadSpec? SpecOf(BenchmarkCase benchmarkCase) => Instantiate(benchmarkCase)?.Spec;

    /// <summary>Whether a case should run: the simulator runs only the tiny case, the other backends never.</summary>
    public static bool Runs(BenchmarkCase benchmarkCase) =>
        Instantiate(benchmarkCase) is not { } instance || instance.Tiny == (instance.Backend == BenchDevices.Simulator);

    /// <summary>A fresh instance of the case's class with the case's parameters set, or null for other benchmark classes.</summary>
    private static WorkloadBenchmark? Instantiate(BenchmarkCase benchmarkCase)
    {
        ArgumentNullException.ThrowIfNull(benchmarkCase);
        var type = benchmarkCase.Descriptor.Type;
        if (!typeof(WorkloadBenchmark).IsAssignableFrom(type) || Activator.CreateInstance(type) is not WorkloadBenchmark instance)
            return null;
        foreach (var parameter in benchmarkCase.Parameters.Items)
            type.GetProperty(parameter.Name)?.SetValue(instance, parameter.Value);
        return instance;
    }
}
