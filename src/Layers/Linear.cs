using GpuTransformer.Kernels;
using GpuTransformer.Kernels.Backends;

namespace GpuTransformer.Layers;

/// <summary>
/// <c>nn.Linear</c>: y = x·Wᵀ + b over the last dimension, W [out, in] as PyTorch stores it.
/// Initialised as PyTorch does: W kaiming_uniform(a=√5) = U(±1/√in), b U(±1/√in).
/// A linear layer may use a weight owned elsewhere (a tied output projection): it then reads
/// and accumulates into that parameter without listing it among its own.
/// <para>Keeps for the backward: its input x (a reference: the tensor must not change before <see cref="Backward"/>).</para>
/// </summary>
public sealed class Linear : Module
{
    private readonly MatmulKernels matmul;
    private readonly ReductionKernels reduction;
    private readonly Tensor<float> output;
    private readonly Tensor<float> inputGradient;
    private Tensor<float>? input;

    /// <summary>A linear layer with its own weight [out, in] (and bias [out] when <paramref name="bias"/>).</summary>
    /// <param name="device">Where the weights and buffers live.</param>
    /// <param name="inFeatures">Width of an input row.</param>
    /// <param name="outFeatures">Width of an output row.</param>
    /// <param name="bias">Whether the layer adds a bias [out].</param>
    /// <param name="init">Seeds the weights' start.</param>
    /// <param name="sharedWeight">A weight [out, in] owned by another module (weight tying); null to create <c>weight</c>.</param>
    public Linear(ComputeDevice device, int inFeatures, int outFeatures, bool bias, ParameterInitializer init, Parameter? sharedWeight = null)
        : base(device)
    {
        ArgumentNullException.ThrowIfNull(init);
        Require.Positive(inFeatures, nameof(inFeatures));
        Require.Positive(outFeatures, nameof(outFeatures));
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        if (sharedWeight is null)
        {
            Weight = Parameter("weight", [outFeatures, inFeatures], decay: true);
            init.KaimingUniform(Weight);
        }
        else
        {
            if (sharedWeight.Shape.Count != 2 || sharedWeight.Shape[0] != outFeatures || sharedWeight.Shape[1] != inFeatures)
                throw new ArgumentException($"Shared weight {sharedWeight} must have shape [{outFeatures}, {inFeatures}].", nameof(sharedWeight));
            Weight = sharedWeight;
        }
        if (bias)
        {
            Bias = Parameter("bias", [outFeatures], decay: false);
            init.Uniform(Bias, 1.0 / Math.Sqrt(inFeatures));
        }
        matmul = device.Kernels<MatmulKernels>();
        reduction = device.Kernels<ReductionKernels>();
        output = Buffer<float>(1);
        inputGradient = Buffer<float>(1);
    }

    /// <summary>in_features.</summary>
    public int InFeatures { get; }

    /// <summary>out_features.</summary>
    public int OutFeatures { get; }

    /// <summary>Learnable scalars of a linear layer: W [out, in] unless it uses another module's (<paramref name="sharedWeight"/>), b [out].</summary>
    internal static long ParameterCount(int inFeatures, int outFeatures, bool bias, bool sharedWeight = false) =>
        (sharedWeight ? 0 : (long)outFeatures * inFeatures) + (bias ? outFeatures : 0);

    /// <summary>Device bytes of its buffers after a step over <paramref name="rows"/> rows: y [rows, out] (+ dx [rows, in] when training).</summary>
    internal static long ActivationBytes(long rows, int inFeatures, int outFeatures, bool training) =>
        sizeof(float) * ((rows * outFeatures) + (training ? rows * inFeatures : 0));

    /// <summary>W [out, in] (possibly another module's, see the constructor).</summary>
    public Parameter Weight { get; }

    /// <summary>b [out], or null without a bias.</summary>
    public Parameter? Bias { get; }

    /// <summary>The output of the last forward. // [..., out]</summary>
    internal Tensor<float> Output => output;

    /// <summary>y = x·Wᵀ + b. // x [..., in] → y [..., out]</summary>
    /// <exception cref="ArgumentException">The last dimension of x is not in_features.</exception>
    public Tensor<float> Forward(Tensor<float> x)
    {
        var rows = Rows(x, nameof(x));
        output.ResizeLike(x, OutFeatures);
        matmul.Multiply(
            output.View, x.View, Weight.Value.View, rows, OutFeatures, InFeatures, MatmulLayout.NT,
            new MatmulEpilogue { Bias = Bias?.Value.View ?? default });
        input = x;
        return output;
    }

    /// <summary>
    /// Evaluation only: y = act(x·Wᵀ + b) with the activation in the product's epilogue (one
    /// launch instead of two); no backward follows it. // x [..., in] → y [..., out]
    /// </summary>
    internal Tensor<float> ForwardActivated(Tensor<float> x, Activation activation)
    {
        var rows = Rows(x, nameof(x));
        output.ResizeLike(x, OutFeatures);
        matmul.Multiply(
            output.View, x.View, Weight.Value.View, rows, OutFeatures, InFeatures, MatmulLayout.NT,
            new MatmulEpilogue { Bias = Bias?.Value.View ?? default, Activation = activation });
        input = null;
        return output;
    }

    /// <summary>
    /// Evaluation only: residual += x·Wᵀ + b in place, the residual connection's sum in the
    /// product's epilogue (one launch instead of two); no backward follows it.
    /// // x [..., in], residual [..., out] → residual
    /// </summary>
    /// <exception cref="ArgumentException">x's last dimension is not in_features, or residual is not [..., out] with x's rows.</exception>
    internal Tensor<float> ForwardAddInto(Tensor<float> residual, Tensor<float> x)
    {
        ArgumentNullException.ThrowIfNull(residual);
        var rows = Rows(x, nameof(x));
        if (residual.Length != (long)rows * OutFeatures)
            throw new ArgumentException($"The residual stream {residual} does not hold {rows} rows of {OutFeatures} (x is {x}).", nameof(residual));
        matmul.Multiply(
            residual.View, x.View, Weight.Value.View, rows, OutFeatures, InFeatures, MatmulLayout.NT,
            new MatmulEpilogue { Bias = Bias?.Value.View ?? default, Accumulate = true });
        input = null;
        return residual;
    }

    /// <summary>
    /// dx = dy·W; accumulates dW += dyᵀ·x and db += Σ_rows dy. // dy [..., out] → dx [..., in]
    /// </summary>
    /// <exception cref="ArgumentException">No forward ran, or dy's shape is not the forward's output shape.</exception>
    public Tensor<float> Backward(Tensor<float> dOutput)
    {
        var x = input ?? throw new InvalidOperationException("Linear.Backward needs a Forward first.");
        RequireOutputShape(dOutput);
        var rows = x.Length / InFeatures;
        inputGradient.ResizeLike(x, InFeatures);
        matmul.Multiply(inputGradient.View, dOutput.View, Weight.Value.View, rows, InFeatures, OutFeatures, MatmulLayout.NN);
        matmul.Multiply(
            Weight.Gradient.View, dOutput.View, x.View, OutFeatures, InFeatures, rows, MatmulLayout.TN,
            new MatmulEpilogue { Accumulate = true });
        if (Bias is not null)
            reduction.ColumnSums(Bias.Gradient.View, dOutput.View, rows, OutFeatures, accumulate: true);
        return inputGradient;
    }

    private int Rows(Tensor<float> x, string name)
    {
        ArgumentNullException.ThrowIfNull(x, name);
        if (x.Dim(-1) != InFeatures)
            throw new ArgumentException($"{name} has shape {x} but this linear layer takes [..., {InFeatures}].", name);
        return x.Length / InFeatures;
    }

    private void RequireOutputShape(Tensor<float> dOutput)
    {
        ArgumentNullException.ThrowIfNull(dOutput);
        if (!dOutput.HasShapeOf(output))
            throw new ArgumentException($"dOutput has shape {dOutput} but the forward's output has shape {output}.", nameof(dOutput));
    }
}
