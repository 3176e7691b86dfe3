using GpuTransformer.Kernels.Backends;
using GpuTransformer.Kernels.Reference;
using ILGPU;

namespace GpuTransformer.Kernels.Workloads;

/// <summary>
/// Self-attention over dense [B, T, H, d] Q, K, V with scale 1/√d: the fused kernels
/// (<see cref="AttentionKernels"/>), or the unfused path built from our own kernels
/// (<see cref="AttentionSpec.Unfused"/>). FLOPs by FlashAttention's convention: the forward
/// counts its two products, 4·B·H·T²·d, halved when causal; forward+backward counts 3.5× the
/// forward (the backward's recomputation of P is not counted as useful work).
/// </summary>
/// <param name="Batch">B.</param>
/// <param name="Heads">H.</param>
/// <param name="Length">T (queries = keys).</param>
/// <param name="HeadDim">d.</param>
/// <param name="Causal">Causal mask.</param>
/// <param name="Backward">Forward then backward (dQ, dK, dV from a random dO) instead of the forward alone.</param>
/// <param name="Unfused">
/// <see cref="UnfusedAttentionKernels"/> instead: batched <see cref="MatmulKernels"/> products and
/// <see cref="SoftmaxKernels"/> with P [B, H, T, T] in memory. Needs 2·B·H·T² floats of scratch
/// (P, and the backward's dS).
/// </param>
public sealed record AttentionSpec(int Batch, int Heads, int Length, int HeadDim, bool Causal, bool Backward = false, bool Unfused = false) : WorkloadSpec
{
    /// <inheritdoc/>
    public override string Family => "Attention";

    /// <inheritdoc/>
    public override string Operation =>
        $"{(Unfused ? "unfused" : "fused")} {(Backward ? "fwd+bwd" : "fwd")}{(Causal ? " causal" : "")}";

    /// <inheritdoc/>
    public override string Shape => $"B {Batch}, H {Heads}, T {Length}, d {HeadDim}";

    /// <summary>FLOPs of the forward alone.</summary>
    public double ForwardFlops => 4.0 * Batch * Heads * Length * (double)Length * HeadDim * (Causal ? 0.5 : 1.0);

    /// <inheritdoc/>
    public override WorkloadCost Cost
    {
        get
        {
            var operand = 4.0 * Batch * Length * Heads * HeadDim;
            // Forward: read Q, K, V, write O (+ the row statistics); backward: also read dO, O, write dQ, dK, dV.
            var bytes = Backward ? 9 * operand : 4 * operand;
            return new(Backward ? 3.5 * ForwardFlops : ForwardFlops, bytes, ThroughputUnit.GflopsPerSecond);
        }
    }

    /// <inheritdoc/>
    public override KernelWorkload Create(ComputeDevice device, int seed = 1) => new Workload(device, this, seed);

    private sealed class Workload : KernelWorkload
    {
        private readonly AttentionSpec spec;
        private readonly AttentionShape shape;
        private readonly AttentionOptions options;
        private readonly int count;
        private readonly float[] hostQ;
        private readonly float[] hostK;
        private readonly float[] hostV;
        private readonly float[] hostDOutput;
        private readonly ArrayView<float> q;
        private readonly ArrayView<float> k;
        private readonly ArrayView<float> v;
        private readonly ArrayView<float> output;
        private readonly ArrayView<float> dOutput;
        private readonly ArrayView<float> dq;
        private readonly ArrayView<float> dk;
        private readonly ArrayView<float> dv;

        // Fused: row statistics [B, H, T]. Unfused: P and dP/dS [B, H, T, T].
        private readonly ArrayView<float> logSumExp;
        private readonly ArrayView<float> rowDot;
        private readonly ArrayView<float> scores;
        private readonly ArrayView<float> dScores;

        public Workload(ComputeDevice device, AttentionSpec spec, int seed)
            : base(device, spec)
        {
            this.spec = spec;
            shape = new AttentionShape(spec.Batch, spec.Heads, spec.Length, spec.Length, spec.HeadDim);
            options = new AttentionOptions { Causal = spec.Causal };
            count = Require.Product("[B, T, H, d]", spec.Batch, spec.Length, spec.Heads, spec.HeadDim);
            var random = new Random(seed);
            hostQ = RandomFloats(random, count);
            hostK = RandomFloats(random, count);
            hostV = RandomFloats(random, count);
            hostDOutput = RandomFloats(random, count);
            q = Upload(hostQ);
            k = Upload(hostK);
            v = Upload(hostV);
            output = Allocate<float>(count);
            if (spec.Backward)
            {
                dOutput = Upload(hostDOutput);
                dq = Allocate<float>(count);
                dk = Allocate<float>(count);
                dv = Allocate<float>(count);
            }
            var rows = (long)spec.Batch * spec.Heads * spec.Length;
            if (spec.Unfused)
            {
                scores = Allocate<float>(rows * spec.Length);
                if (spec.Backward)
                    dScores = Allocate<float>(rows * spec.Length);
            }
            else
            {
                logSumExp = Allocate<float>(rows);
                if (spec.Backward)
                    rowDot = Allocate<float>(rows);
            }
        }

        public override void Run()
        {
            if (spec.Unfused)
                RunUnfused();
            else
                RunFused();
        }

        private void RunFused()
        {
            var attention = Device.Kernels<AttentionKernels>();
            attention.Forward(output, logSumExp, q, k, v, shape, options);
            if (spec.Backward)
                attention.Backward(dq, dk, dv, rowDot, dOutput, output, logSumExp, q, k, v, shape, options);
        }

        private void RunUnfused()
        {
            var attention = Device.Kernels<UnfusedAttentionKernels>();
            attention.Forward(output, scores, q, k, v, shape, options);
            if (spec.Backward)
                attention.Backward(dq, dk, dv, dScores, dOutput, scores, q, k, v, shape, options);
        }

        public override WorkloadCheck Check()
        {
            Poison(output, count);
            if (spec.Backward)
            {
                Poison(dq, count);
                Poison(dk, count);
                Poison(dv, count);
            }
            Run();
            var expectedOutput = new float[count];
            var expectedLse = new float[spec.Batch * spec.Heads * spec.Length];
            AttentionReference.Forward(expectedOutput, expectedLse, hostQ, hostK, hostV, shape, options);
            var comparison = new WorkloadComparison().Add("O", expectedOutput, Download(output, count), 2e-5, 1e-4);
            if (!spec.Backward)
                return comparison.Result();
            var (expectedDq, expectedDk, expectedDv) = (new float[count], new float[count], new float[count]);
            AttentionReference.Backward(expectedDq, expectedDk, expectedDv, hostDOutput, hostQ, hostK, hostV, shape, options);
            return comparison
                .Add("dQ", expectedDq, Download(dq, count), 1e-4, 1e-3)
                .Add("dK", expectedDk, Download(dk, count), 1e-4, 1e-3)
                .Add("dV", expectedDv, Download(dv, count), 1e-4, 1e-3)
                .Result();
        }
    }
}
