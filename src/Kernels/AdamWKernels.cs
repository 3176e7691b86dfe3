using GpuTransformer.Kernels.Backends;
using ILGPU;
using ILGPU.Runtime;

namespace GpuTransformer.Kernels;

/// <summary>
/// Hyper-parameters of one AdamW update, with PyTorch's names and defaults
/// (<c>torch.optim.AdamW(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)</c>).
/// </summary>
/// <param name="Step">The step number t ≥ 1 of this update (PyTorch's <c>state['step']</c> after its increment).</param>
/// <param name="LearningRate">lr ≥ 0 (after any schedule).</param>
/// <param name="WeightDecay">Decoupled weight decay λ ≥ 0; 0 for biases and norm gains.</param>
/// <param name="Beta1">Decay of the first moment, in [0, 1).</param>
/// <param name="Beta2">Decay of the second moment, in [0, 1).</param>
/// <param name="Epsilon">ε ≥ 0 added to the bias-corrected root of the second moment.</param>
public readonly record struct AdamWStep(
    int Step,
    double LearningRate,
    double WeightDecay = 0.01,
    double Beta1 = 0.9,
    double Beta2 = 0.999,
    double Epsilon = 1e-8);

/// <summary>
/// The AdamW update of <c>torch.optim.AdamW</c> (single-tensor path), one thread per
/// element, in PyTorch's order of operations:
/// p ← p·(1 − lr·λ); m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
/// p ← p − (lr/(1−β1ᵗ)) · m / (√v / √(1−β2ᵗ) + ε), with g = grad · gradScale.
/// Bias corrections are computed on the host in double and passed in as floats, as
/// PyTorch passes Python floats.
/// </summary>
public sealed class AdamWKernels : IKernelFamily<AdamWKernels>, IDisposable
{
    private readonly ComputeDevice device;
    private readonly MemoryBuffer1D<float, Stride1D.Dense> one;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Scalars> step;

    private AdamWKernels(ComputeDevice device)
    {
        this.device = device;
        var accelerator = device.Accelerator;
        step = accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Scalars>(StepKernel);
        // The device-side scale of the host-scale overload.
        one = accelerator.Allocate1D<float>(1);
        one.View.CopyFromCPU(device.Stream, [1f]);
    }

    /// <inheritdoc/>
    public static AdamWKernels Create(ComputeDevice device) => new(device);

    /// <inheritdoc/>
    public static IEnumerable<KernelEntry> EntryPoints(KernelTuning tuning) => [KernelEntry.Of(StepKernel)];

    /// <summary>
    /// One AdamW update of <paramref name="count"/> parameters in place, g = gradients ·
    /// <paramref name="gradScale"/> (a clipping factor, 1 otherwise). All four views are
    /// [count] and must be distinct memory.
    /// </summary>
    /// <exception cref="ArgumentException">A hyper-parameter outside PyTorch's valid range, step &lt; 1, a non-positive count, short or overlapping views.</exception>
    public void Step(
        ArrayView<float> parameters, ArrayView<float> firstMoment, ArrayView<float> secondMoment, ArrayView<float> gradients,
        int count, AdamWStep hyper, float gradScale = 1f)
    {
        if (!float.IsFinite(gradScale))
            throw new ArgumentException($"gradScale must be finite, got {gradScale}.", nameof(gradScale));
        Launch(parameters, firstMoment, secondMoment, gradients, one.View, count, hyper, gradScale);
    }

    /// <summary>
    /// One AdamW update with the gradient scale read on the device from
    /// <paramref name="gradScale"/>[0] (e.g. the clip factor <see cref="ReductionKernels.GlobalNorm"/>
    /// writes), so clipping needs no host round trip.
    /// </summary>
    /// <exception cref="ArgumentException">A hyper-parameter outside PyTorch's valid range, step &lt; 1, a non-positive count, short or overlapping views.</exception>
    public void Step(
        ArrayView<float> parameters, ArrayView<float> firstMoment, ArrayView<float> secondMoment, ArrayView<float> gradients,
        int count, AdamWStep hyper, ArrayView<float> gradScale)
    {
        Require.Holds(gradScale, 1, nameof(gradScale), "[1]");
        Launch(parameters, firstMoment, secondMoment, gradients, gradScale, count, hyper, 1f);
    }

    /// <summary>Checks <paramref name="hyper"/> as <c>torch.optim.AdamW</c> does, plus step ≥ 1 and finiteness.</summary>
    /// <exception cref="ArgumentException">Naming the offending value.</exception>
    public static void Validate(AdamWStep hyper)
    {
        if (hyper.Step < 1)
            throw new ArgumentException($"AdamW step must be ≥ 1, got {hyper.Step}.", nameof(hyper));
        RequireFinite(hyper.LearningRate, 0, double.MaxValue, "learning rate");
        RequireFinite(hyper.WeightDecay, 0, double.MaxValue, "weight decay");
        RequireFinite(hyper.Epsilon, 0, double.MaxValue, "epsilon");
        if (!(hyper.Beta1 >= 0 && hyper.Beta1 < 1) || !(hyper.Beta2 >= 0 && hyper.Beta2 < 1))
            throw new ArgumentException($"AdamW betas must be in [0, 1), got ({hyper.Beta1}, {hyper.Beta2}).", nameof(hyper));
    }

    private void Launch(
        ArrayView<float> parameters, ArrayView<float> firstMoment, ArrayView<float> secondMoment, ArrayView<float> gradients,
        ArrayView<float> deviceScale, int count, AdamWStep hyper, float hostScale)
    {
        Require.Positive(count, nameof(count));
        Validate(hyper);
        var shape = $"[{count}]";
        Require.Holds(parameters, count, nameof(parameters), shape);
        Require.Holds(firstMoment, count, nameof(firstMoment), shape);
        Require.Holds(secondMoment, count, nameof(secondMoment), shape);
        Require.Holds(gradients, count, nameof(gradients), shape);
        (parameters, firstMoment) = (parameters.SubView(0, count), firstMoment.SubView(0, count)); // overlap checks see the used ranges only
        (secondMoment, gradients) = (secondMoment.SubView(0, count), gradients.SubView(0, count));
        Require.Distinct(parameters, nameof(parameters), firstMoment, nameof(firstMoment));
        Require.Distinct(parameters, nameof(parameters), secondMoment, nameof(secondMoment));
        Require.Distinct(parameters, nameof(parameters), gradients, nameof(gradients));
        Require.Distinct(firstMoment, nameof(firstMoment), secondMoment, nameof(secondMoment));
        Require.Distinct(firstMoment, nameof(firstMoment), gradients, nameof(gradients));
        Require.Distinct(secondMoment, nameof(secondMoment), gradients, nameof(gradients));
        using var profile = device.Profile("AdamW", "step", 0, 7.0 * sizeof(float) * count);
        step(device.Stream, count, parameters, firstMoment, secondMoment, gradients, deviceScale, ScalarsFor(hyper, hostScale));
    }

    // Every factor is rounded to float once, from the same double expression PyTorch evaluates in Python.
    private static Scalars ScalarsFor(AdamWStep h, float gradScale) => new(
        Decay: (float)(1 - h.LearningRate * h.WeightDecay),
        Beta1: (float)h.Beta1,
        OneMinusBeta1: (float)(1 - h.Beta1),
        Beta2: (float)h.Beta2,
        OneMinusBeta2: (float)(1 - h.Beta2),
        NegativeStepSize: (float)(-(h.LearningRate / (1 - Math.Pow(h.Beta1, h.Step)))),
        SqrtBiasCorrection2: (float)Math.Sqrt(1 - Math.Pow(h.Beta2, h.Step)),
        Epsilon: (float)h.Epsilon,
        GradScale: gradScale);

    private static void RequireFinite(double value, double min, double max, string what)
    {
        if (!(value >= min && value <= max))
            throw new ArgumentException($"AdamW {what} must be in [{min}, {max}], got {value}.", nameof(value));
    }

    /// <inheritdoc/>
    public void Dispose() => one.Dispose();

    /// <summary>Per-step factors, packed to keep the kernel signature short.</summary>
    internal readonly record struct Scalars(
        float Decay, float Beta1, float OneMinusBeta1, float Beta2, float OneMinusBeta2,
        float NegativeStepSize, float SqrtBiasCorrection2, float Epsilon, float GradScale);

    private static void StepKernel(
        Index1D i, ArrayView<float> parameters, ArrayView<float> firstMoment, ArrayView<float> secondMoment,
        ArrayView<float> gradients, ArrayView<float> gradScale, Scalars s)
    {
        var g = gradients[i] * s.GradScale * gradScale[0];
        var p = parameters[i] * s.Decay;
        var m = firstMoment[i] * s.Beta1 + s.OneMinusBeta1 * g;
        var v = secondMoment[i] * s.Beta2 + s.OneMinusBeta2 * g * g;
        firstMoment[i] = m;
        secondMoment[i] = v;
        parameters[i] = p + s.NegativeStepSize * (m / (MathF.Sqrt(v) / s.SqrtBiasCorrection2 + s.Epsilon));
    }
}
