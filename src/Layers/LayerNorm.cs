using GpuTransformer.Kernels;
using GpuTransformer.Kernels.Backends;

namespace GpuTransformer.Layers;

/// <summary>
/// <c>nn.LayerNorm(d_model, eps)</c> over the last dimension: y = (x − mean)/√(var + eps)·γ + β with
/// the biased variance; γ (<c>weight</c>) starts at 1 and β (<c>bias</c>) at 0, as in PyTorch.
/// <para>Keeps for the backward: its input x (a reference) and each row's mean and 1/√(var + eps).</para>
/// </summary>
public sealed class LayerNorm : Module
{
    private readonly LayerNormKernels kernels;
    private readonly Tensor<float> output;
    private readonly Tensor<float> mean;
    private readonly Tensor<float> rstd;
    private readonly Tensor<float> inputGradient;
    private readonly Tensor<float> scratch;
    private Tensor<float>? input;

    /// <summary>A LayerNorm over the last dimension of width <paramref name="dModel"/>, γ = 1, β = 0.</summary>
    public LayerNorm(ComputeDevice device, int dModel, float eps = 1e-5f)
        : base(device)
    {
        Require.Positive(dModel, nameof(dModel));
        if (!(eps > 0f) || !float.IsFinite(eps))
            throw new ArgumentException($"LayerNorm eps must be positive and finite, got {eps}.", nameof(eps));
        DModel = dModel;
        Eps = eps;
        Weight = Parameter("weight", [dModel], decay: false);
        Bias = Parameter("bias", [dModel], decay: false);
        ParameterInitializer.Constant(Weight, 1f);
        ParameterInitializer.Constant(Bias, 0f);
        kernels = device.Kernels<LayerNormKernels>();
        output = Buffer<float>(1);
        mean = Buffer<float>(1);
        rstd = Buffer<float>(1);
        inputGradient = Buffer<float>(1);
        scratch = Buffer<float>(1);
    }

    /// <summary>E, the normalised width (the model width d_model).</summary>
    public int DModel { get; }

    /// <summary>eps added to the variance.</summary>
    public float Eps { get; }

    /// <summary>Learnable scalars: γ and β [E].</summary>
    internal static long ParameterCount(int dModel) => 2L * dModel;

    /// <summary>
    /// Device bytes of its buffers after a step over <paramref name="rows"/> rows: y [rows, E], mean
    /// and rstd [rows] (+ dx [rows, E] and the backward's scratch, <see cref="LayerNormKernels.BackwardScratchLength"/>, when training).
    /// </summary>
    internal static long ActivationBytes(long rows, int dModel, bool training) =>
        sizeof(float) * ((rows * dModel) + (2 * rows) + (training ? (rows * dModel) + LayerNormKernels.BackwardScratchLength(checked((int)rows), dModel) : 0));

    /// <summary>γ [E].</summary>
    public Parameter Weight { get; }

    /// <summary>β [E].</summary>
    public Parameter Bias { get; }

    /// <summary>y = LayerNorm(x). // x [..., E] → y [..., E]</summary>
    /// <exception cref="ArgumentException">The last dimension of x is not E.</exception>
    public Tensor<float> Forward(Tensor<float> x)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (x.Dim(-1) != DModel)
            throw new ArgumentException($"x has shape {x} but this LayerNorm normalises [..., {DModel}].", nameof(x));
        var rows = x.Length / DModel;
        output.ResizeLike(x, DModel);
        mean.Resize(rows);
        rstd.Resize(rows);
        kernels.Forward(output.View, mean.View, rstd.View, x.View, Weight.Value.View, Bias.Value.View, rows, DModel, Eps);
        input = x;
        return output;
    }

    /// <summary>dx from dy; accumulates dγ += Σ dy·x̂ and dβ += Σ dy. // dy [..., E] → dx [..., E]</summary>
    public Tensor<float> Backward(Tensor<float> dOutput)
    {
        var x = input ?? throw new InvalidOperationException("LayerNorm.Backward needs a Forward first.");
        ArgumentNullException.ThrowIfNull(dOutput);
        if (!dOutput.HasShapeOf(x))
            throw new ArgumentException($"dOutput has shape {dOutput} but the forward's output has shape {x}.", nameof(dOutput));
        var rows = x.Length / DModel;
        inputGradient.ResizeLike(x, DModel);
        scratch.Resize(LayerNormKernels.BackwardScratchLength(rows, DModel));
        kernels.Backward(
            inputGradient.View, Weight.Gradient.View, Bias.Gradient.View, scratch.View,
            dOutput.View, x.View, Weight.Value.View, mean.View, rstd.View, rows, DModel, accumulateParameterGradients: true);
        return inputGradient;
    }
}
