using BenchmarkDotNet.Attributes;
using GpuTransformer.Kernels.Workloads;

namespace GpuTransformer.Bench.Benchmarks;

/// <summary>Shapes "rows x columns" of the row-wise benchmarks.</summary>
public static class RowShapes
{
    /// <summary>The simulator's shape.</summary>
    public const string Tiny = "63x33";

    /// <summary>63×33 (simulator); 1024×1024 and 4096×1024; with --full also 8192×4096.</summary>
    public static IEnumerable<string> All => BenchSettings.Full ? [Tiny, "1024x1024", "4096x1024", "8192x4096"] : [Tiny, "1024x1024", "4096x1024"];

    /// <summary>Parses "rows x columns".</summary>
    public static (int Rows, int Columns) Parse(string shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        var parts = shape.Split('x');
        return (int.Parse(parts[0], System.Globalization.CultureInfo.InvariantCulture), int.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture));
    }
}

/// <summary>A row-wise kernel over the <see cref="RowShapes"/>, forward and backward.</summary>
public abstract class RowWiseBenchmark : WorkloadBenchmark
{
    /// <summary>rows x columns.</summary>
    [ParamsSource(nameof(Shapes))]
    public string Shape { get; set; } = RowShapes.Tiny;

    /// <summary>Forward or backward.</summary>
    [Params(false, true)]
    public bool Backward { get; set; }

    public static IEnumerable<string> Shapes => RowShapes.All;

    public override bool Tiny => Shape == RowShapes.Tiny;

    public override WorkloadSpec Spec
    {
        get
        {
            var (rows, columns) = RowShapes.Parse(Shape);
            return Create(rows, columns, Backward);
        }
    }

    /// <summary>The family's workload of [rows, columns].</summary>
    protected abstract WorkloadSpec Create(int rows, int columns, bool backward);
}

/// <summary>Row softmax, forward and backward.</summary>
public class SoftmaxBenchmarks : RowWiseBenchmark
{
    protected override WorkloadSpec Create(int rows, int columns, bool backward) => new SoftmaxSpec(rows, columns, backward);

    [Benchmark]
    public void Softmax() => RunAndSynchronize();
}

/// <summary>LayerNorm, forward and backward.</summary>
public class LayerNormBenchmarks : RowWiseBenchmark
{
    protected override WorkloadSpec Create(int rows, int columns, bool backward) => new LayerNormSpec(rows, columns, backward);

    [Benchmark]
    public void LayerNorm() => RunAndSynchronize();
}

/// <summary>Cross-entropy forward+backward over logits [N, V].</summary>
public class CrossEntropyBenchmarks : WorkloadBenchmark
{
    /// <summary>N x V.</summary>
    [ParamsSource(nameof(Shapes))]
    public string Shape { get; set; } = "33x61";

    /// <summary>33×61 (simulator); 1024×8192; with --full also 4096×32000.</summary>
    public static IEnumerable<string> Shapes => BenchSettings.Full ? ["33x61", "1024x8192", "4096x32000"] : ["33x61", "1024x8192"];

    public override bool Tiny => Shape == "33x61";

    public override WorkloadSpec Spec
    {
        get
        {
            var (rows, vocabulary) = RowShapes.Parse(Shape);
            return new CrossEntropySpec(rows, vocabulary);
        }
    }

    [Benchmark]
    public void CrossEntropy() => RunAndSynchronize();
}
