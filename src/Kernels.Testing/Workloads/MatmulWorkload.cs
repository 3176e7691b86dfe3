using GpuTransformer.Kernels.Backends;
using GpuTransformer.Kernels.Reference;
using ILGPU;

namespace GpuTransformer.Kernels.Workloads;

/// <summary>
/// One product C[M,N] = op(A)·op(B) with the tiled kernel (<see cref="MatmulKernels.Multiply"/>)
/// or the naive baseline (<see cref="MatmulKernels.MultiplyNaive"/>): 2·M·N·K FLOPs.
/// </summary>
/// <param name="Layout">NN, NT or TN.</param>
/// <param name="M">Rows of C.</param>
/// <param name="N">Columns of C.</param>
/// <param name="K">Inner dimension.</param>
/// <param name="Naive">The naive kernel instead of the tiled one.</param>
public sealed record MatmulSpec(MatmulLayout Layout, int M, int N, int K, bool Naive = false) : WorkloadSpec
{
    /// <summary>A square product of size <paramref name="n"/>.</summary>
    public static MatmulSpec Square(int n, MatmulLayout layout = MatmulLayout.NN, bool naive = false) => new(layout, n, n, n, naive);

    /// <inheritdoc/>
    public override string Family => "Matmul";

    /// <inheritdoc/>
    public override string Operation => $"{(Naive ? "naive" : "tiled")} {Layout}";

    /// <inheritdoc/>
    public override string Shape => M == N && N == K ? $"{M}³" : $"M {M}, N {N}, K {K}";

    /// <inheritdoc/>
    public override WorkloadCost Cost => new(
        2.0 * M * N * K,
        4.0 * ((double)M * K + (double)K * N + (double)M * N),
        ThroughputUnit.GflopsPerSecond);

    /// <inheritdoc/>
    public override KernelWorkload Create(ComputeDevice device, int seed = 1) => new Workload(device, this, seed);

    private sealed class Workload : KernelWorkload
    {
        private readonly MatmulSpec spec;
        private readonly MatmulKernels matmul;
        private readonly float[] hostA;
        private readonly float[] hostB;
        private readonly ArrayView<float> a;
        private readonly ArrayView<float> b;
        private readonly ArrayView<float> c;

        public Workload(ComputeDevice device, MatmulSpec spec, int seed)
            : base(device, spec)
        {
            this.spec = spec;
            matmul = device.Kernels<MatmulKernels>();
            var random = new Random(seed);
            hostA = RandomFloats(random, (long)spec.M * spec.K);
            hostB = RandomFloats(random, (long)spec.K * spec.N);
            a = Upload(hostA);
            b = Upload(hostB);
            c = Allocate<float>((long)spec.M * spec.N);
        }

        public override void Run()
        {
            if (spec.Naive)
                matmul.MultiplyNaive(c, a, b, spec.M, spec.N, spec.K, spec.Layout);
            else
                matmul.Multiply(c, a, b, spec.M, spec.N, spec.K, spec.Layout);
        }

        public override WorkloadCheck Check()
        {
            var count = (long)spec.M * spec.N;
            Poison(c, count);
            Run();
            var actual = Download(c, count);
            var expected = MatmulReference.Multiply(new float[count], hostA, hostB, spec.M, spec.N, spec.K, spec.Layout);
            // Float accumulation error grows with K; a wrong index is off by O(1).
            return new WorkloadComparison().Add("C", expected, actual, 1e-6 * spec.K, 1e-4).Result();
        }
    }
}
