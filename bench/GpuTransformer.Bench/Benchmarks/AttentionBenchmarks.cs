using BenchmarkDotNet.Attributes;
using GpuTransformer.Kernels.Workloads;

namespace GpuTransformer.Bench.Benchmarks;

/// <summary>Forward or forward+backward.</summary>
public enum AttentionPass
{
    /// <summary>Forward only.</summary>
    Forward,

    /// <summary>Forward then backward.</summary>
    ForwardBackward,
}

/// <summary>
/// Fused attention (<see cref="Kernels.AttentionKernels"/>) for B·H = 8 (B 1, H 8), d = 64; the
/// simulator runs B 1, H 2, T 33, d 16. The fused-vs-unfused comparison is the <c>compare</c> runner's.
/// </summary>
public class AttentionBenchmarks : WorkloadBenchmark
{
    /// <summary>Forward or forward+backward.</summary>
    [Params(AttentionPass.Forward, AttentionPass.ForwardBackward)]
    public AttentionPass Pass { get; set; }

    /// <summary>Causal mask.</summary>
    [Params(false, true)]
    public bool Causal { get; set; }

    /// <summary>Sequence length.</summary>
    [ParamsSource(nameof(Lengths))]
    public int T { get; set; }

    /// <summary>33 (simulator); 128, 256, 512; with --full also 1024.</summary>
    public static IEnumerable<int> Lengths => BenchSettings.Full ? [33, 128, 256, 512, 1024] : [33, 128, 256, 512];

    public override bool Tiny => T < 64;

    public override WorkloadSpec Spec => Tiny
        ? new AttentionSpec(1, 2, T, 16, Causal, Pass == AttentionPass.ForwardBackward)
        : new AttentionSpec(1, 8, T, 64, Causal, Pass == AttentionPass.ForwardBackward);

    [Benchmark]
    public void Attention() => RunAndSynchronize();
}
