using GpuTransformer.Kernels.Backends;
using GpuTransformer.Kernels.Reference;
using ILGPU;

namespace GpuTransformer.Kernels.Workloads;

/// <summary>
/// An activation over <paramref name="Count"/> elements (<see cref="ActivationKernels"/>), forward
/// (reads x, writes y) or backward (reads dy and x, writes dx).
/// </summary>
/// <param name="Count">Elements.</param>
/// <param name="Activation">The function (GELU by default, the tanh form).</param>
/// <param name="Backward">The backward instead of the forward.</param>
public sealed record ActivationSpec(int Count, Activation Activation = Activation.Gelu, bool Backward = false) : WorkloadSpec
{
    /// <inheritdoc/>
    public override string Family => "Activations";

    /// <inheritdoc/>
    public override string Operation => $"{Activation} {(Backward ? "backward" : "forward")}";

    /// <inheritdoc/>
    public override string Shape => $"{Count}";

    /// <inheritdoc/>
    public override WorkloadCost Cost => new((Backward ? 14.0 : 8.0) * Count, 4.0 * Count * (Backward ? 3 : 2), ThroughputUnit.GigabytesPerSecond);

    /// <inheritdoc/>
    public override KernelWorkload Create(ComputeDevice device, int seed = 1) => new Workload(device, this, seed);

    private sealed class Workload : KernelWorkload
    {
        private readonly ActivationSpec spec;
        private readonly ActivationKernels activations;
        private readonly float[] hostInput;
        private readonly float[] hostDOutput;
        private readonly ArrayView<float> input;
        private readonly ArrayView<float> dOutput;
        private readonly ArrayView<float> result;

        public Workload(ComputeDevice device, ActivationSpec spec, int seed)
            : base(device, spec)
        {
            this.spec = spec;
            activations = device.Kernels<ActivationKernels>();
            var random = new Random(seed);
            hostInput = RandomFloats(random, spec.Count, 4f);
            hostDOutput = RandomFloats(random, spec.Count);
            input = Upload(hostInput);
            dOutput = spec.Backward ? Upload(hostDOutput) : default;
            result = Allocate<float>(spec.Count);
        }

        public override void Run()
        {
            if (spec.Backward)
                activations.Backward(result, dOutput, input, spec.Count, spec.Activation);
            else
                activations.Forward(result, input, spec.Count, spec.Activation);
        }

        public override WorkloadCheck Check()
        {
            Poison(result, spec.Count);
            Run();
            var expected = spec.Backward
                ? ActivationsReference.Backward(hostDOutput, hostInput, spec.Activation)
                : ActivationsReference.Forward(hostInput, spec.Activation);
            return new WorkloadComparison().Add(spec.Backward ? "dx" : "y", expected, Download(result, spec.Count), 1e-6, 1e-5).Result();
        }
    }
}

/// <summary>
/// Token embedding with the fused sinusoidal positional encoding (<see cref="EmbeddingKernels"/>):
/// the forward gathers N rows of the [V, C] table (reads N ids and N·C floats, writes N·C);
/// the backward zeroes the table gradient and sums dOutput per token (writes V·C, reads N·C
/// and the buckets' 3·N + 1 ints). The buckets are built once, outside the timed run.
/// </summary>
/// <param name="Tokens">N = batch · sequence.</param>
/// <param name="Sequence">T (positions repeat every T tokens).</param>
/// <param name="Vocabulary">V.</param>
/// <param name="Channels">C (d_model).</param>
/// <param name="Backward">The backward instead of the forward.</param>
public sealed record EmbeddingSpec(int Tokens, int Sequence, int Vocabulary, int Channels, bool Backward = false) : WorkloadSpec
{
    /// <inheritdoc/>
    public override string Family => "Embedding";

    /// <inheritdoc/>
    public override string Operation => Backward ? "backward" : "forward (+PE)";

    /// <inheritdoc/>
    public override string Shape => $"N {Tokens}, V {Vocabulary}, C {Channels}";

    /// <inheritdoc/>
    public override WorkloadCost Cost
    {
        get
        {
            double n = Tokens, c = Channels;
            var words = Backward ? n * c + (double)Vocabulary * c + 3 * n + 1 : n + 2 * n * c;
            return new(2 * n * c, 4 * words, ThroughputUnit.GigabytesPerSecond);
        }
    }

    /// <inheritdoc/>
    public override KernelWorkload Create(ComputeDevice device, int seed = 1) => new Workload(device, this, seed);

    private sealed class Workload : KernelWorkload
    {
        private readonly EmbeddingSpec spec;
        private readonly EmbeddingKernels embedding;
        private readonly TokenBuckets buckets;
        private readonly int[] hostTokens;
        private readonly float[] hostTable;
        private readonly float[] hostDOutput;
        private readonly ArrayView<float> table;
        private readonly ArrayView<float> output;
        private readonly ArrayView<float> dOutput;
        private readonly ArrayView<float> dTable;
        private readonly float scale;

        public Workload(ComputeDevice device, EmbeddingSpec spec, int seed)
            : base(device, spec)
        {
            this.spec = spec;
            embedding = device.Kernels<EmbeddingKernels>();
            scale = MathF.Sqrt(spec.Channels);
            var random = new Random(seed);
            hostTokens = RandomInts(random, spec.Tokens, spec.Vocabulary);
            hostTable = RandomFloats(random, (long)spec.Vocabulary * spec.Channels, 0.1f);
            hostDOutput = RandomFloats(random, (long)spec.Tokens * spec.Channels);
            buckets = Own(new TokenBuckets(device));
            buckets.Build(hostTokens, spec.Vocabulary);
            table = Upload(hostTable);
            output = Allocate<float>((long)spec.Tokens * spec.Channels);
            if (spec.Backward)
            {
                dOutput = Upload(hostDOutput);
                dTable = Allocate<float>((long)spec.Vocabulary * spec.Channels);
            }
        }

        public override void Run()
        {
            if (spec.Backward)
                embedding.Backward(dTable, dOutput, buckets, spec.Channels, scale);
            else
                embedding.Forward(output, buckets, table, spec.Channels, scale, new SinusoidalPositions(spec.Sequence));
        }

        public override WorkloadCheck Check()
        {
            if (spec.Backward)
            {
                var tableCount = (long)spec.Vocabulary * spec.Channels;
                Poison(dTable, tableCount);
                Run();
                var expected = EmbeddingReference.Backward(new float[tableCount], hostDOutput, hostTokens, spec.Channels, scale);
                return new WorkloadComparison().Add("dTable", expected, Download(dTable, tableCount), 1e-5, 1e-5).Result();
            }
            var count = (long)spec.Tokens * spec.Channels;
            Poison(output, count);
            Run();
            var forward = EmbeddingReference.Forward(hostTokens, hostTable, spec.Channels, scale, new SinusoidalPositions(spec.Sequence));
            return new WorkloadComparison().Add("output", forward, Download(output, count), 2e-6, 1e-5).Result();
        }
    }
}

/// <summary>
/// One AdamW update of <paramref name="Count"/> parameters in place (<see cref="AdamWKernels"/>):
/// reads p, m, v, g and writes p, m, v (7 floats per parameter).
/// </summary>
/// <param name="Count">Parameters.</param>
public sealed record AdamWSpec(int Count) : WorkloadSpec
{
    /// <inheritdoc/>
    public override string Family => "AdamW";

    /// <inheritdoc/>
    public override string Operation => "step";

    /// <inheritdoc/>
    public override string Shape => $"{Count}";

    /// <inheritdoc/>
    public override WorkloadCost Cost => new(14.0 * Count, 28.0 * Count, ThroughputUnit.GigabytesPerSecond);

    /// <inheritdoc/>
    public override KernelWorkload Create(ComputeDevice device, int seed = 1) => new Workload(device, this, seed);

    private sealed class Workload : KernelWorkload
    {
        private static readonly AdamWStep Hyper = new(Step: 3, LearningRate: 1e-3);
        private readonly AdamWSpec spec;
        private readonly AdamWKernels adamW;
        private readonly float[] hostParameters;
        private readonly float[] hostFirst;
        private readonly float[] hostSecond;
        private readonly float[] hostGradients;
        private readonly ArrayView<float> parameters;
        private readonly ArrayView<float> first;
        private readonly ArrayView<float> second;
        private readonly ArrayView<float> gradients;

        public Workload(ComputeDevice device, AdamWSpec spec, int seed)
            : base(device, spec)
        {
            this.spec = spec;
            adamW = device.Kernels<AdamWKernels>();
            var random = new Random(seed);
            hostParameters = RandomFloats(random, spec.Count);
            hostFirst = RandomFloats(random, spec.Count, 0.01f);
            hostSecond = RandomFloats(random, spec.Count, 1e-4f).Select(Math.Abs).ToArray();
            hostGradients = RandomFloats(random, spec.Count, 0.1f);
            parameters = Upload(hostParameters);
            first = Upload(hostFirst);
            second = Upload(hostSecond);
            gradients = Upload(hostGradients);
        }

        public override void Run() => adamW.Step(parameters, first, second, gradients, spec.Count, Hyper);

        public override WorkloadCheck Check()
        {
            // The update is in place: start again from the initial state.
            Write(parameters, hostParameters);
            Write(first, hostFirst);
            Write(second, hostSecond);
            Run();
            var (p, m, v) = ((float[])hostParameters.Clone(), (float[])hostFirst.Clone(), (float[])hostSecond.Clone());
            AdamWReference.Step(p, m, v, hostGradients, Hyper);
            return new WorkloadComparison()
                .Add("p", p, Download(parameters, spec.Count), 1e-6, 1e-5)
                .Add("m", m, Download(first, spec.Count), 1e-7, 1e-5)
                .Add("v", v, Download(second, spec.Count), 1e-9, 1e-5)
                .Result();
        }
    }
}

/// <summary>
/// The sinusoidal positional encoding added to [batch, sequence, dModel] activations
/// (<see cref="PositionalEncodingKernels.Forward"/>): reads x, writes y (the table is computed in the kernel).
/// </summary>
/// <param name="Batch">Sequences.</param>
/// <param name="Sequence">Positions per sequence.</param>
/// <param name="DModel">Channels.</param>
public sealed record PositionalEncodingSpec(int Batch, int Sequence, int DModel) : WorkloadSpec
{
    /// <inheritdoc/>
    public override string Family => "PositionalEncoding";

    /// <inheritdoc/>
    public override string Operation => "forward";

    /// <inheritdoc/>
    public override string Shape => $"{Batch} × {Sequence} × {DModel}";

    private double Elements => (double)Batch * Sequence * DModel;

    /// <inheritdoc/>
    public override WorkloadCost Cost => new(2 * Elements, 8 * Elements, ThroughputUnit.GigabytesPerSecond);

    /// <inheritdoc/>
    public override KernelWorkload Create(ComputeDevice device, int seed = 1) => new Workload(device, this, seed);

    private sealed class Workload : KernelWorkload
    {
        private readonly PositionalEncodingSpec spec;
        private readonly PositionalEncodingKernels encoding;
        private readonly int count;
        private readonly float[] hostInput;
        private readonly ArrayView<float> input;
        private readonly ArrayView<float> output;

        public Workload(ComputeDevice device, PositionalEncodingSpec spec, int seed)
            : base(device, spec)
        {
            this.spec = spec;
            encoding = device.Kernels<PositionalEncodingKernels>();
            count = Require.Product("[batch, sequence, dModel]", spec.Batch, spec.Sequence, spec.DModel);
            hostInput = RandomFloats(new Random(seed), count);
            input = Upload(hostInput);
            output = Allocate<float>(count);
        }

        public override void Run() => encoding.Forward(output, input, spec.Batch, spec.Sequence, spec.DModel);

        public override WorkloadCheck Check()
        {
            Poison(output, count);
            Run();
            var expected = PositionalEncodingReference.Forward(hostInput, spec.Batch, spec.Sequence, spec.DModel);
            return new WorkloadComparison().Add("y", expected, Download(output, count), 2e-6, 1e-6).Result();
        }
    }
}

/// <summary>Inverted dropout with p = 0.1 over <paramref name="Count"/> elements (<see cref="DropoutKernels.Forward"/>): reads x, writes y.</summary>
/// <param name="Count">Elements.</param>
public sealed record DropoutSpec(int Count) : WorkloadSpec
{
    private const float Probability = 0.1f;
    private const ulong Seed = 1234;

    /// <inheritdoc/>
    public override string Family => "Dropout";

    /// <inheritdoc/>
    public override string Operation => $"forward p={Probability}";

    /// <inheritdoc/>
    public override string Shape => $"{Count}";

    /// <inheritdoc/>
    public override WorkloadCost Cost => new(Count, 8.0 * Count, ThroughputUnit.GigabytesPerSecond);

    /// <inheritdoc/>
    public override KernelWorkload Create(ComputeDevice device, int seed = 1) => new Workload(device, this, seed);

    private sealed class Workload : KernelWorkload
    {
        private readonly DropoutSpec spec;
        private readonly DropoutKernels dropout;
        private readonly float[] hostInput;
        private readonly ArrayView<float> input;
        private readonly ArrayView<float> output;

        public Workload(ComputeDevice device, DropoutSpec spec, int seed)
            : base(device, spec)
        {
            this.spec = spec;
            dropout = device.Kernels<DropoutKernels>();
            hostInput = RandomFloats(new Random(seed), spec.Count);
            input = Upload(hostInput);
            output = Allocate<float>(spec.Count);
        }

        public override void Run() => dropout.Forward(output, input, spec.Count, Probability, Seed, 0);

        public override WorkloadCheck Check()
        {
            Poison(output, spec.Count);
            Run();
            var expected = DropoutReference.Apply(hostInput, Probability, Seed, 0);
            return new WorkloadComparison().Add("y", expected, Download(output, spec.Count), 1e-7, 1e-6).Result();
        }
    }
}

/// <summary>
/// The global gradient norm and clip factor of one buffer (<see cref="ReductionKernels.SumOfSquares"/>
/// then <see cref="ReductionKernels.GlobalNorm"/>): reads the buffer once.
/// </summary>
/// <param name="Count">Elements.</param>
public sealed record GlobalNormSpec(int Count) : WorkloadSpec
{
    private const float MaxNorm = 1f;

    /// <inheritdoc/>
    public override string Family => "Reduction";

    /// <inheritdoc/>
    public override string Operation => "global norm";

    /// <inheritdoc/>
    public override string Shape => $"{Count}";

    /// <inheritdoc/>
    public override WorkloadCost Cost => new(2.0 * Count, 4.0 * Count, ThroughputUnit.GigabytesPerSecond);

    /// <inheritdoc/>
    public override KernelWorkload Create(ComputeDevice device, int seed = 1) => new Workload(device, this, seed);

    private sealed class Workload : KernelWorkload
    {
        private readonly GlobalNormSpec spec;
        private readonly ReductionKernels reduction;
        private readonly float[] hostInput;
        private readonly ArrayView<float> input;
        private readonly ArrayView<float> partials;
        private readonly ArrayView<float> result;

        public Workload(ComputeDevice device, GlobalNormSpec spec, int seed)
            : base(device, spec)
        {
            this.spec = spec;
            reduction = device.Kernels<ReductionKernels>();
            hostInput = RandomFloats(new Random(seed), spec.Count);
            input = Upload(hostInput);
            partials = Allocate<float>(reduction.PartialCount(spec.Count));
            result = Allocate<float>(2);
        }

        public override void Run()
        {
            var partialCount = reduction.SumOfSquares(partials, 0, input, spec.Count);
            reduction.GlobalNorm(result, partials, partialCount, MaxNorm);
        }

        public override WorkloadCheck Check()
        {
            Poison(result, 2);
            Run();
            var norm = ReductionReference.GlobalNorm([hostInput]);
            return new WorkloadComparison().Add("norm, clip", [norm, ReductionReference.ClipFactor(norm, MaxNorm)], Download(result, 2), 1e-6, 1e-5).Result();
        }
    }
}

/// <summary>Elementwise c = a + b over <paramref name="Count"/> elements (<see cref="ElementwiseKernels.Add"/>): reads 2, writes 1 float each.</summary>
/// <param name="Count">Elements.</param>
public sealed record ElementwiseAddSpec(int Count) : WorkloadSpec
{
    /// <inheritdoc/>
    public override string Family => "Elementwise";

    /// <inheritdoc/>
    public override string Operation => "add";

    /// <inheritdoc/>
    public override string Shape => $"{Count}";

    /// <inheritdoc/>
    public override WorkloadCost Cost => new(Count, 12.0 * Count, ThroughputUnit.GigabytesPerSecond);

    /// <inheritdoc/>
    public override KernelWorkload Create(ComputeDevice device, int seed = 1) => new Workload(device, this, seed);

    private sealed class Workload : KernelWorkload
    {
        private readonly ElementwiseAddSpec spec;
        private readonly ElementwiseKernels elementwise;
        private readonly float[] hostA;
        private readonly float[] hostB;
        private readonly ArrayView<float> a;
        private readonly ArrayView<float> b;
        private readonly ArrayView<float> c;

        public Workload(ComputeDevice device, ElementwiseAddSpec spec, int seed)
            : base(device, spec)
        {
            this.spec = spec;
            elementwise = device.Kernels<ElementwiseKernels>();
            var random = new Random(seed);
            hostA = RandomFloats(random, spec.Count);
            hostB = RandomFloats(random, spec.Count);
            a = Upload(hostA);
            b = Upload(hostB);
            c = Allocate<float>(spec.Count);
        }

        public override void Run() => elementwise.Add(c, a, b, spec.Count);

        public override WorkloadCheck Check()
        {
            Poison(c, spec.Count);
            Run();
            return new WorkloadComparison().Add("c", ElementwiseReference.Add(hostA, hostB), Download(c, spec.Count), 0, 1e-7).Result();
        }
    }
}
