using BenchmarkDotNet.Attributes;
using GpuTransformer.Kernels.Workloads;

namespace GpuTransformer.Bench.Benchmarks;

/// <summary>Element counts of the one-thread-per-element benchmarks.</summary>
public static class ElementCounts
{
    /// <summary>The simulator's count.</summary>
    public const int Tiny = 4099;

    /// <summary>4099 (simulator); 2²⁰ and 2²²; with --full also 2²⁵.</summary>
    public static IEnumerable<int> All => BenchSettings.Full ? [Tiny, 1 << 20, 1 << 22, 1 << 25] : [Tiny, 1 << 20, 1 << 22];
}

/// <summary>GELU (tanh form), forward and backward.</summary>
public class GeluBenchmarks : WorkloadBenchmark
{
    /// <summary>Elements.</summary>
    [ParamsSource(nameof(Counts))]
    public int Count { get; set; }

    /// <summary>Forward or backward.</summary>
    [Params(false, true)]
    public bool Backward { get; set; }

    public static IEnumerable<int> Counts => ElementCounts.All;

    public override bool Tiny => Count == ElementCounts.Tiny;

    public override WorkloadSpec Spec => new ActivationSpec(Count, Kernels.Activation.Gelu, Backward);

    [Benchmark]
    public void Gelu() => RunAndSynchronize();
}

/// <summary>AdamW step over a flat parameter buffer.</summary>
public class AdamWBenchmarks : WorkloadBenchmark
{
    /// <summary>Parameters.</summary>
    [ParamsSource(nameof(Counts))]
    public int Count { get; set; }

    public static IEnumerable<int> Counts => ElementCounts.All;

    public override bool Tiny => Count == ElementCounts.Tiny;

    public override WorkloadSpec Spec => new AdamWSpec(Count);

    [Benchmark]
    public void AdamW() => RunAndSynchronize();
}

/// <summary>Token embedding (+ positional encoding) forward and backward, T 128, V 8192, C 256.</summary>
public class EmbeddingBenchmarks : WorkloadBenchmark
{
    /// <summary>Tokens N = batch · 128 (64 on the simulator, with T 16, V 50, C 32).</summary>
    [ParamsSource(nameof(TokenCounts))]
    public int Tokens { get; set; }

    /// <summary>Forward or backward.</summary>
    [Params(false, true)]
    public bool Backward { get; set; }

    /// <summary>64 (simulator); 2048, 8192; with --full also 32768.</summary>
    public static IEnumerable<int> TokenCounts => BenchSettings.Full ? [64, 2048, 8192, 32768] : [64, 2048, 8192];

    public override bool Tiny => Tokens == 64;

    public override WorkloadSpec Spec => Tiny
        ? new EmbeddingSpec(Tokens, 16, 50, 32, Backward)
        : new EmbeddingSpec(Tokens, 128, 8192, 256, Backward);

    [Benchmark]
    public void Embedding() => RunAndSynchronize();
}

/// <summary>Sinusoidal positional encoding added to [B, T, d_model].</summary>
public class PositionalEncodingBenchmarks : WorkloadBenchmark
{
    /// <summary>B x T x d_model.</summary>
    [ParamsSource(nameof(Shapes))]
    public string Shape { get; set; } = "2x16x32";

    /// <summary>2×16×32 (simulator); 16×128×256, 32×512×512; with --full also 64×1024×1024.</summary>
    public static IEnumerable<string> Shapes => BenchSettings.Full ? ["2x16x32", "16x128x256", "32x512x512", "64x1024x1024"] : ["2x16x32", "16x128x256", "32x512x512"];

    public override bool Tiny => Shape == "2x16x32";

    public override WorkloadSpec Spec
    {
        get
        {
            var parts = Shape.Split('x').Select(p => int.Parse(p, System.Globalization.CultureInfo.InvariantCulture)).ToArray();
            return new PositionalEncodingSpec(parts[0], parts[1], parts[2]);
        }
    }

    [Benchmark]
    public void PositionalEncoding() => RunAndSynchronize();
}
