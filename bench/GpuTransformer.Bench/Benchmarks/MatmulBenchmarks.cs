using BenchmarkDotNet.Attributes;
using GpuTransformer.Kernels;
using GpuTransformer.Kernels.Workloads;

namespace GpuTransformer.Bench.Benchmarks;

/// <summary>Which matmul kernel.</summary>
public enum MatmulKernel
{
    /// <summary><see cref="MatmulKernels.Multiply"/>.</summary>
    Tiled,

    /// <summary><see cref="MatmulKernels.MultiplyNaive"/>.</summary>
    Naive,
}

/// <summary>Square products C[N,N] = op(A)·op(B), tiled and naive, in every layout.</summary>
public class MatmulBenchmarks : WorkloadBenchmark
{
    /// <summary>Tiled or naive.</summary>
    [Params(MatmulKernel.Tiled, MatmulKernel.Naive)]
    public MatmulKernel Kernel { get; set; }

    /// <summary>NN, NT, TN.</summary>
    [Params(MatmulLayout.NN, MatmulLayout.NT, MatmulLayout.TN)]
    public MatmulLayout Layout { get; set; }

    /// <summary>M = N = K.</summary>
    [ParamsSource(nameof(Sizes))]
    public int N { get; set; }

    /// <summary>33 (simulator); 256, 512, 1024; with --full also 2048.</summary>
    public static IEnumerable<int> Sizes => BenchSettings.Full ? [33, 256, 512, 1024, 2048] : [33, 256, 512, 1024];

    public override bool Tiny => N < 64;

    public override WorkloadSpec Spec => MatmulSpec.Square(N, Layout, Kernel == MatmulKernel.Naive);

    [Benchmark]
    public void Matmul() => RunAndSynchronize();
}
