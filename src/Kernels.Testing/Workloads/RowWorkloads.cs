using GpuTransformer.Kernels.Backends;
using GpuTransformer.Kernels.Reference;
using ILGPU;

namespace GpuTransformer.Kernels.Workloads;

/// <summary>
/// Row softmax over [R, C] (<see cref="SoftmaxKernels"/>), forward or backward. Bytes: the forward
/// reads x and writes y (2·R·C floats); the backward reads y and dy and writes dx (3·R·C).
/// </summary>
/// <param name="Rows">R.</param>
/// <param name="Columns">C.</param>
/// <param name="Backward">The backward instead of the forward.</param>
public sealed record SoftmaxSpec(int Rows, int Columns, bool Backward = false) : WorkloadSpec
{
    /// <inheritdoc/>
    public override string Family => "Softmax";

    /// <inheritdoc/>
    public override string Operation => Backward ? "backward" : "forward";

    /// <inheritdoc/>
    public override string Shape => $"{Rows} × {Columns}";

    /// <inheritdoc/>
    public override WorkloadCost Cost
    {
        get
        {
            var elements = (double)Rows * Columns;
            return new(elements * (Backward ? 4 : 5), 4 * elements * (Backward ? 3 : 2), ThroughputUnit.GigabytesPerSecond);
        }
    }

    /// <inheritdoc/>
    public override KernelWorkload Create(ComputeDevice device, int seed = 1) => new Workload(device, this, seed);

    private sealed class Workload : KernelWorkload
    {
        private readonly SoftmaxSpec spec;
        private readonly SoftmaxKernels softmax;
        private readonly int count;
        private readonly float[] hostInput;
        private readonly float[] hostDOutput;
        private readonly ArrayView<float> input;
        private readonly ArrayView<float> dOutput;
        private readonly ArrayView<float> result;

        public Workload(ComputeDevice device, SoftmaxSpec spec, int seed)
            : base(device, spec)
        {
            this.spec = spec;
            softmax = device.Kernels<SoftmaxKernels>();
            count = Require.Product("softmax [R, C]", spec.Rows, spec.Columns);
            var random = new Random(seed);
            // The backward's input is a softmax output (rows summing to one), as in training.
            hostInput = spec.Backward
                ? SoftmaxReference.Forward(RandomFloats(random, count, 3f), spec.Rows, spec.Columns)
                : RandomFloats(random, count, 3f);
            hostDOutput = RandomFloats(random, count);
            input = Upload(hostInput);
            dOutput = spec.Backward ? Upload(hostDOutput) : default;
            result = Allocate<float>(count);
        }

        public override void Run()
        {
            if (spec.Backward)
                softmax.Backward(result, input, dOutput, spec.Rows, spec.Columns);
            else
                softmax.Forward(result, input, spec.Rows, spec.Columns);
        }

        public override WorkloadCheck Check()
        {
            Poison(result, count);
            Run();
            var actual = Download(result, count);
            return spec.Backward
                ? new WorkloadComparison().Add("dx", SoftmaxReference.Backward(hostInput, hostDOutput, spec.Rows, spec.Columns), actual, 2e-6, 1e-4).Result()
                : new WorkloadComparison().Add("y", SoftmaxReference.Forward(hostInput, spec.Rows, spec.Columns), actual, 1e-6, 1e-5).Result();
        }
    }
}

/// <summary>
/// LayerNorm over [N, C] (<see cref="LayerNormKernels"/>), forward or backward. Bytes: the forward
/// reads x, γ, β and writes y, mean, rstd ((2·N·C + 2·C + 2·N) floats); the backward reads
/// dy, x, γ, mean, rstd and writes dx, dγ, dβ ((3·N·C + 3·C + 2·N) floats).
/// </summary>
/// <param name="Rows">N.</param>
/// <param name="Columns">C.</param>
/// <param name="Backward">The backward (dx, dγ, dβ) instead of the forward.</param>
public sealed record LayerNormSpec(int Rows, int Columns, bool Backward = false) : WorkloadSpec
{
    /// <inheritdoc/>
    public override string Family => "LayerNorm";

    /// <inheritdoc/>
    public override string Operation => Backward ? "backward" : "forward";

    /// <inheritdoc/>
    public override string Shape => $"{Rows} × {Columns}";

    /// <inheritdoc/>
    public override WorkloadCost Cost
    {
        get
        {
            double n = Rows, c = Columns;
            var floats = Backward ? 3 * n * c + 3 * c + 2 * n : 2 * n * c + 2 * c + 2 * n;
            return new((Backward ? 9 : 7) * n * c, 4 * floats, ThroughputUnit.GigabytesPerSecond);
        }
    }

    /// <inheritdoc/>
    public override KernelWorkload Create(ComputeDevice device, int seed = 1) => new Workload(device, this, seed);

    private sealed class Workload : KernelWorkload
    {
        private readonly LayerNormSpec spec;
        private readonly LayerNormKernels layerNorm;
        private readonly int count;
        private readonly float[] hostInput;
        private readonly float[] hostGamma;
        private readonly float[] hostBeta;
        private readonly float[] hostDOutput;
        private readonly ArrayView<float> input;
        private readonly ArrayView<float> gamma;
        private readonly ArrayView<float> beta;
        private readonly ArrayView<float> output;
        private readonly ArrayView<float> mean;
        private readonly ArrayView<float> rstd;
        private readonly ArrayView<float> dOutput;
        private readonly ArrayView<float> dGamma;
        private readonly ArrayView<float> dBeta;
        private readonly ArrayView<float> scratch;

        public Workload(ComputeDevice device, LayerNormSpec spec, int seed)
            : base(device, spec)
        {
            this.spec = spec;
            layerNorm = device.Kernels<LayerNormKernels>();
            count = Require.Product("layernorm [N, C]", spec.Rows, spec.Columns);
            var random = new Random(seed);
            hostInput = RandomFloats(random, count, 2f);
            hostGamma = RandomFloats(random, spec.Columns);
            hostBeta = RandomFloats(random, spec.Columns);
            hostDOutput = RandomFloats(random, count);
            input = Upload(hostInput);
            gamma = Upload(hostGamma);
            beta = Upload(hostBeta);
            output = Allocate<float>(count);
            mean = Allocate<float>(spec.Rows);
            rstd = Allocate<float>(spec.Rows);
            if (spec.Backward)
            {
                dOutput = Upload(hostDOutput);
                dGamma = Allocate<float>(spec.Columns);
                dBeta = Allocate<float>(spec.Columns);
                scratch = Allocate<float>(LayerNormKernels.BackwardScratchLength(spec.Rows, spec.Columns));
                // The backward reads the forward's saved statistics.
                layerNorm.Forward(output, mean, rstd, input, gamma, beta, spec.Rows, spec.Columns);
            }
        }

        public override void Run()
        {
            if (spec.Backward)
                layerNorm.Backward(output, dGamma, dBeta, scratch, dOutput, input, gamma, mean, rstd, spec.Rows, spec.Columns);
            else
                layerNorm.Forward(output, mean, rstd, input, gamma, beta, spec.Rows, spec.Columns);
        }

        public override WorkloadCheck Check()
        {
            Poison(output, count);
            if (!spec.Backward)
            {
                Poison(mean, spec.Rows);
                Poison(rstd, spec.Rows);
                Run();
                var (y, expectedMean, expectedRstd) = LayerNormReference.Forward(hostInput, hostGamma, hostBeta, spec.Rows, spec.Columns);
                return new WorkloadComparison()
                    .Add("y", y, Download(output, count), 1e-5, 1e-4)
                    .Add("mean", expectedMean, Download(mean, spec.Rows), 1e-5, 1e-5)
                    .Add("rstd", expectedRstd, Download(rstd, spec.Rows), 0, 1e-4)
                    .Result();
            }
            Poison(dGamma, spec.Columns);
            Poison(dBeta, spec.Columns);
            Run();
            var (dx, dg, db) = LayerNormReference.Backward(
                hostDOutput, hostInput, hostGamma, Download(mean, spec.Rows), Download(rstd, spec.Rows), spec.Rows, spec.Columns);
            // dγ and dβ sum over N rows: their rounding grows with N.
            var sumAtol = 2e-6 * spec.Rows;
            return new WorkloadComparison()
                .Add("dx", dx, Download(output, count), 2e-5, 1e-4)
                .Add("dγ", dg, Download(dGamma, spec.Columns), sumAtol, 1e-4)
                .Add("dβ", db, Download(dBeta, spec.Columns), sumAtol, 1e-4)
                .Result();
        }
    }
}

/// <summary>
/// Cross-entropy forward and backward in one launch (<see cref="CrossEntropyKernels.ForwardBackward"/>)
/// over logits [N, V] with mean reduction. Bytes: reads the logits and targets, writes
/// dlogits and the losses ((2·N·V + 2·N) words).
/// </summary>
/// <param name="Rows">N (tokens).</param>
/// <param name="Vocabulary">V.</param>
public sealed record CrossEntropySpec(int Rows, int Vocabulary) : WorkloadSpec
{
    /// <inheritdoc/>
    public override string Family => "CrossEntropy";

    /// <inheritdoc/>
    public override string Operation => "forward+backward";

    /// <inheritdoc/>
    public override string Shape => $"N {Rows}, V {Vocabulary}";

    /// <inheritdoc/>
    public override WorkloadCost Cost
    {
        get
        {
            var elements = (double)Rows * Vocabulary;
            return new(6 * elements, 4 * (2 * elements + 2.0 * Rows), ThroughputUnit.GigabytesPerSecond);
        }
    }

    /// <inheritdoc/>
    public override KernelWorkload Create(ComputeDevice device, int seed = 1) => new Workload(device, this, seed);

    private sealed class Workload : KernelWorkload
    {
        private readonly CrossEntropySpec spec;
        private readonly CrossEntropyKernels crossEntropy;
        private readonly int count;
        private readonly float[] hostLogits;
        private readonly int[] hostTargets;
        private readonly ArrayView<float> logits;
        private readonly ArrayView<int> targets;
        private readonly ArrayView<float> losses;
        private readonly ArrayView<float> dLogits;

        public Workload(ComputeDevice device, CrossEntropySpec spec, int seed)
            : base(device, spec)
        {
            this.spec = spec;
            crossEntropy = device.Kernels<CrossEntropyKernels>();
            count = Require.Product("logits [N, V]", spec.Rows, spec.Vocabulary);
            var random = new Random(seed);
            hostLogits = RandomFloats(random, count, 4f);
            hostTargets = RandomInts(random, spec.Rows, spec.Vocabulary);
            logits = Upload(hostLogits);
            targets = Upload(hostTargets);
            losses = Allocate<float>(spec.Rows);
            dLogits = Allocate<float>(count);
        }

        private float GradScale => 1f / spec.Rows;

        public override void Run() =>
            crossEntropy.ForwardBackward(losses, dLogits, logits, targets, spec.Rows, spec.Vocabulary, GradScale);

        public override WorkloadCheck Check()
        {
            Poison(losses, spec.Rows);
            Poison(dLogits, count);
            Run();
            var (expectedLosses, _) = CrossEntropyReference.Forward(hostLogits, hostTargets, spec.Rows, spec.Vocabulary);
            var expectedGradient = CrossEntropyReference.Backward(hostLogits, hostTargets, spec.Rows, spec.Vocabulary, GradScale);
            return new WorkloadComparison()
                .Add("losses", expectedLosses, Download(losses, spec.Rows), 1e-5, 1e-5)
                .Add("dlogits", expectedGradient, Download(dLogits, count), 1e-7, 1e-5)
                .Result();
        }
    }
}
