using GpuTransformer.Kernels;
using GpuTransformer.Kernels.Profiling;
using GpuTransformer.Layers.IO;
using GpuTransformer.Layers;

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
/// Owns the moment buffers (<c>exp_avg</c>, <c>exp_avg_sq</c> as PyTorch names them), which
/// <see cref="StateTensors"/> exposes for checkpoints.
/// </summary>
public sealed class AdamWOptimizer : IDisposable
{
    private readonly IReadOnlyList<Parameter> parameters;
    private readonly Tensor<float>[] firstMoments;
    private readonly Tensor<float>[] secondMoments;
    private readonly Tensor<float> partials;
    private readonly Tensor<float> norm; // [norm, clip factor]
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
        var device = this.parameters[0].Value.Device;
        adamW = device.Kernels<AdamWKernels>();
        reduction = device.Kernels<ReductionKernels>();
        AdamWKernels.Validate(Hyper(1, 1e-3, decay: true));
        firstMoments = this.parameters.Select(p => new Tensor<float>(device, [.. p.Shape])).ToArray();
        secondMoments = this.parameters.Select(p => new Tensor<float>(device, [.. p.Shape])).ToArray();
        partials = new Tensor<float>(device, this.parameters.Sum(p => reduction.PartialCount(p.Value.Length)));
        norm = new Tensor<float>(device, 2);
    }

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
        using var phase = norm.Device.InPhase(ProfilePhase.Optimizer);
        var offset = 0;
        foreach (var parameter in parameters)
            offset = reduction.SumOfSquares(partials.View, offset, parameter.Gradient.View, parameter.Gradient.Length);
        reduction.GlobalNorm(norm.View, partials.View, offset, (float)Options.MaxGradNorm);

        StepCount++;
        var scale = norm.View.SubView(1, 1);
        for (var i = 0; i < parameters.Count; i++)
        {
            var parameter = parameters[i];
            adamW.Step(parameter.Value.View, firstMoments[i].View, secondMoments[i].View, parameter.Gradient.View,
                parameter.Value.Length, Hyper(StepCount, learningRate, parameter.Decay), scale);
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
            yield return SafeTensor.FromFloats($"{FirstMomentPrefix}{parameters[i].Name}", shape, firstMoments[i].ToArray());
            yield return SafeTensor.FromFloats($"{SecondMomentPrefix}{parameters[i].Name}", shape, secondMoments[i].ToArray());
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
            firstMoments[i].CopyFrom(file.Floats($"{FirstMomentPrefix}{parameters[i].Name}", shape));
            secondMoments[i].CopyFrom(file.Floats($"{SecondMomentPrefix}{parameters[i].Name}", shape));
        }
        StepCount = stepCount;
    }

    /// <summary>Name prefix of first-moment tensors in a checkpoint.</summary>
    internal const string FirstMomentPrefix = "optimizer.exp_avg.";

    /// <summary>Name prefix of second-moment tensors in a checkpoint.</summary>
    internal const string SecondMomentPrefix = "optimizer.exp_avg_sq.";

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var tensor in firstMoments.Concat(secondMoments))
            tensor.Dispose();
        partials.Dispose();
        norm.Dispose();
    }

    private AdamWStep Hyper(int step, double learningRate, bool decay) =>
        new(step, learningRate, decay ? Options.WeightDecay : 0, Options.Beta1, Options.Beta2, Options.Epsilon);
}
