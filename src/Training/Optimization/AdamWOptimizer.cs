using GpuTransformer.Kernels;
using GpuTransformer.Kernels.Profiling;
using GpuTransformer.Layers.IO;
using GpuTransformer.Layers;
using GpuTransformer.Kernels.Backends;
using ILGPU;
using ILGPU.Runtime;

namespace GpuTransformer.Training.Optimization;

/// <summary>AdamW hyper-parameters (PyTorch's names and defaults, except weight decay 0.01 as torch.optim.AdamW).</summary>
public sealed record AdamWOptions
{
    /// <summary>β₁, decay of the first moment.</summary>
    public double Beta1 { get; init; } = 0.9;

    /// <summary>β₂, decay of the second moment.</summary>
    public double Beta2 { get; init; } = 0.999;

    /// <summary>ε added to √v̂.</summary>
    public double Epsilon { get; init; } = 1e-8;

    /// <summary>Decoupled weight decay λ, applied only to parameters whose <see cref="Parameter.Decay"/> is set (≥2-D weights that are not embeddings).</summary>
    public double WeightDecay { get; init; } = 0.01;

    /// <summary>Clip the global gradient norm to this value (<c>clip_grad_norm_</c>); +∞ turns clipping off.</summary>
    public double MaxGradNorm { get; init; } = double.PositiveInfinity;
}

/// <summary>
/// <c>torch.optim.AdamW</c> over a model's parameters, with the parameter-group rule of
/// our parity files (weight decay only where <see cref="Parameter.Decay"/>) and optional
/// global-norm clipping. The clip factor is computed and applied on the device (no host
/// round trip); <see cref="Step"/> returns the pre-clip norm only when asked to read it.
/// <para>
/// Works on runs: parameters that lie side by side in a <see cref="ParameterPack"/> with the
/// same decay are one run, every other parameter a run of its own. A packed model (the models
/// pack themselves) is two runs, so a step is two sum-of-squares launches, the norm, and two
/// AdamW launches, whatever the number of tensors. Owns the moment buffers (<c>exp_avg</c>,
/// <c>exp_avg_sq</c> as PyTorch names them), laid out run after run;
/// <see cref="StateTensors"/> exposes them per parameter for checkpoints.
/// </para>
/// </summary>
public sealed class AdamWOptimizer : IDisposable
{
    // At most this many elements per launch (the kernels count in int).
    private const long LaunchElements = 1L << 30;

    private readonly IReadOnlyList<Parameter> parameters;
    private readonly Run[] runs;
    private readonly long[] momentOffsets; // per parameter, into the moment buffers
    private readonly MemoryBuffer1D<float, Stride1D.Dense> firstMoments;
    private readonly MemoryBuffer1D<float, Stride1D.Dense> secondMoments;
    private readonly Tensor<float> partials;
    private readonly Tensor<float> norm; // [norm, clip factor]
    private readonly ComputeDevice device;
    private readonly AdamWKernels adamW;
    private readonly ReductionKernels reduction;

    /// <summary>An optimizer of <paramref name="parameters"/> (moments allocated on their device) with <paramref name="options"/> (null: the defaults).</summary>
    public AdamWOptimizer(IEnumerable<Parameter> parameters, AdamWOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        this.parameters = parameters.Distinct().ToList();
        if (this.parameters.Count == 0)
            throw new ArgumentException("AdamW needs at least one parameter.", nameof(parameters));
        Options = options ?? new AdamWOptions();
        if (!(Options.MaxGradNorm > 0))
            throw new ArgumentException($"MaxGradNorm must be positive (or +∞ for no clipping), got {Options.MaxGradNorm}.", nameof(options));
        device = this.parameters[0].Value.Device;
        adamW = device.Kernels<AdamWKernels>();
        reduction = device.Kernels<ReductionKernels>();
        AdamWKernels.Validate(Hyper(1, 1e-3, decay: true));
        (runs, momentOffsets) = Runs(this.parameters);
        var momentLength = runs.Sum(r => r.Length);
        firstMoments = device.Accelerator.Allocate1D<float>(momentLength);
        secondMoments = device.Accelerator.Allocate1D<float>(momentLength);
        firstMoments.MemSetToZero(device.Stream);
        secondMoments.MemSetToZero(device.Stream);
        partials = new Tensor<float>(device, runs.SelectMany(Launches).Sum(l => reduction.PartialCount(l.Count)));
        norm = new Tensor<float>(device, 2);
    }

    /// <summary>Launches per step of the gradient norm's first pass and of the update (one per run, more only past 2³⁰ elements).</summary>
    internal int LaunchesPerStep => runs.SelectMany(Launches).Count();

    /// <summary>The hyper-parameters.</summary>
    public AdamWOptions Options { get; }

    /// <summary>Optimizer steps taken so far (PyTorch's <c>state['step']</c>).</summary>
    public int StepCount { get; private set; }

    /// <summary>The parameters, in the order their state is stored.</summary>
    public IReadOnlyList<Parameter> Parameters => parameters;

    /// <summary>
    /// One update with learning rate <paramref name="learningRate"/> from the gradients the
    /// backward accumulated. Computes the global gradient norm first (clipping when
    /// <see cref="AdamWOptions.MaxGradNorm"/> is finite). Returns the pre-clip norm when
    /// <paramref name="readNorm"/> (one host read), else NaN.
    /// </summary>
    public float Step(double learningRate, bool readNorm = false)
    {
        using var phase = device.InPhase(ProfilePhase.Optimizer);
        var offset = 0;
        foreach (var launch in runs.SelectMany(Launches))
            offset = reduction.SumOfSquares(partials.View, offset, launch.Gradients, launch.Count);
        reduction.GlobalNorm(norm.View, partials.View, offset, (float)Options.MaxGradNorm);

        StepCount++;
        var scale = norm.View.SubView(1, 1);
        foreach (var run in runs)
        {
            var hyper = Hyper(StepCount, learningRate, run.Decay);
            foreach (var launch in Launches(run))
            {
                adamW.Step(launch.Values, firstMoments.View.SubView(launch.MomentOffset, launch.Count), secondMoments.View.SubView(launch.MomentOffset, launch.Count),
                    launch.Gradients, launch.Count, hyper, scale);
            }
        }
        return readNorm ? norm.ToArray()[0] : float.NaN;
    }

    /// <summary>The global gradient norm of the last step (one host read).</summary>
    public float LastGradientNorm() => norm.ToArray()[0];

    /// <summary>Moment tensors named <c>optimizer.exp_avg.&lt;param&gt;</c> / <c>optimizer.exp_avg_sq.&lt;param&gt;</c>, for checkpoints.</summary>
    internal IEnumerable<SafeTensor> StateTensors()
    {
        for (var i = 0; i < parameters.Count; i++)
        {
            var shape = parameters[i].Shape.ToArray();
            yield return SafeTensor.FromFloats($"{FirstMomentPrefix}{parameters[i].Name}", shape, Read(firstMoments, i));
            yield return SafeTensor.FromFloats($"{SecondMomentPrefix}{parameters[i].Name}", shape, Read(secondMoments, i));
        }
    }

    /// <summary>Restores moments and the step count saved by <see cref="StateTensors"/>.</summary>
    /// <exception cref="InvalidDataException">A moment tensor is missing or has the wrong shape.</exception>
    internal void LoadState(SafeTensorFile file, int stepCount)
    {
        ArgumentNullException.ThrowIfNull(file);
        if (stepCount < 0)
            throw new InvalidDataException($"'{file.Source}': optimizer step count {stepCount} is negative.");
        for (var i = 0; i < parameters.Count; i++)
        {
            var shape = parameters[i].Shape.ToArray();
            Write(firstMoments, i, file.Floats($"{FirstMomentPrefix}{parameters[i].Name}", shape));
            Write(secondMoments, i, file.Floats($"{SecondMomentPrefix}{parameters[i].Name}", shape));
        }
        device.Synchronize(); // the host arrays the copies read go out of scope
        StepCount = stepCount;
    }

    /// <summary>Name prefix of first-moment tensors in a checkpoint.</summary>
    internal const string FirstMomentPrefix = "optimizer.exp_avg.";

    /// <summary>Name prefix of second-moment tensors in a checkpoint.</summary>
    internal const string SecondMomentPrefix = "optimizer.exp_avg_sq.";

    /// <inheritdoc/>
    public void Dispose()
    {
        firstMoments.Dispose();
        secondMoments.Dispose();
        partials.Dispose();
        norm.Dispose();
    }

    private AdamWStep Hyper(int step, double learningRate, bool decay) =>
        new(step, learningRate, decay ? Options.WeightDecay : 0, Options.Beta1, Options.Beta2, Options.Epsilon);

    private ArrayView<float> MomentOf(MemoryBuffer1D<float, Stride1D.Dense> moments, int parameter) =>
        moments.View.SubView(momentOffsets[parameter], parameters[parameter].Value.Length);

    private float[] Read(MemoryBuffer1D<float, Stride1D.Dense> moments, int parameter)
    {
        var values = new float[parameters[parameter].Value.Length];
        device.Synchronize();
        MomentOf(moments, parameter).CopyToCPU(device.Stream, values);
        device.Synchronize();
        return values;
    }

    private void Write(MemoryBuffer1D<float, Stride1D.Dense> moments, int parameter, float[] values) =>
        MomentOf(moments, parameter).CopyFromCPU(device.Stream, values);

    /// <summary>
    /// The runs of <paramref name="parameters"/>: parameters that follow each other in one pack with
    /// the same decay merge (the alignment gap between them holds zeros, which AdamW keeps), every
    /// unpacked parameter is a run of its own. Also where each parameter's moments begin.
    /// </summary>
    private static (Run[] Runs, long[] MomentOffsets) Runs(IReadOnlyList<Parameter> parameters)
    {
        var packs = parameters.Select(p => p.Pack).OfType<ParameterPack>().Distinct().ToList(); // in order of first appearance
        var order = Enumerable.Range(0, parameters.Count)
            .OrderBy(i => parameters[i].Pack is { } pack ? packs.IndexOf(pack) : packs.Count)
            .ThenBy(i => parameters[i].Pack?.IndexOf(parameters[i]) ?? i)
            .ToArray();
        var runs = new List<Run>();
        var momentOffsets = new long[parameters.Count];
        long momentLength = 0;
        Parameter? previous = null;
        foreach (var i in order)
        {
            var parameter = parameters[i];
            var pack = parameter.Pack;
            if (pack is not null && previous?.Pack == pack && previous.Decay == parameter.Decay && pack.IndexOf(previous) + 1 == pack.IndexOf(parameter))
            {
                var run = runs[^1];
                momentOffsets[i] = run.MomentOffset + (pack.OffsetOf(parameter) - run.Start);
                runs[^1] = run with { Length = pack.OffsetOf(parameter) + parameter.Value.Length - run.Start };
                momentLength = run.MomentOffset + runs[^1].Length;
            }
            else
            {
                runs.Add(new Run(parameter, pack, pack?.OffsetOf(parameter) ?? 0, parameter.Value.Length, momentLength, parameter.Decay));
                momentOffsets[i] = momentLength;
                momentLength += parameter.Value.Length;
            }
            previous = parameter;
        }
        return ([.. runs], momentOffsets);
    }

    /// <summary>A run cut into launches of at most <see cref="LaunchElements"/> elements.</summary>
    private static IEnumerable<Launch> Launches(Run run)
    {
        if (run.First.Pack != run.Pack)
            throw new InvalidOperationException($"Parameter '{run.First.Name}' moved {(run.Pack is null ? "into" : "out of")} a parameter pack after its optimizer was built; build the optimizer after packing.");
        var (values, gradients) = run.Pack is { } pack
            ? (pack.Values.SubView(run.Start, run.Length), pack.Gradients.SubView(run.Start, run.Length))
            : (run.First.Value.View, run.First.Gradient.View);
        for (long start = 0; start < run.Length; start += LaunchElements)
        {
            var count = (int)Math.Min(LaunchElements, run.Length - start);
            yield return new Launch(values.SubView(start, count), gradients.SubView(start, count), run.MomentOffset + start, count);
        }
    }

    /// <summary>
    /// Parameters with one decay setting whose values and gradients are contiguous: [Start, Start + Length)
    /// of <paramref name="Pack"/>'s buffers, or <paramref name="First"/>'s own when it is not packed. Their
    /// moments start at <paramref name="MomentOffset"/>.
    /// </summary>
    private sealed record Run(Parameter First, ParameterPack? Pack, long Start, long Length, long MomentOffset, bool Decay);

    private readonly record struct Launch(ArrayView<float> Values, ArrayView<float> Gradients, long MomentOffset, int Count);
}
