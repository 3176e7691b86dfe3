using GpuTransformer.Kernels.Backends;
using GpuTransformer.Kernels;

namespace GpuTransformer.Layers;

/// <summary>
/// The residual connection around one sub-layer f (attention or feed-forward) with its
/// LayerNorm and dropout, as PyTorch's Transformer layers place them:
/// post-LN (the paper) y = norm(x + dropout(f(x))); pre-LN (norm_first) y = x + dropout(f(norm(x))).
/// A layer calls <see cref="SublayerInput"/>, runs f, then <see cref="Forward"/>; its backward
/// calls <see cref="BackwardToSublayer"/>, runs f's backward, then <see cref="Backward"/>.
/// The norm is registered by the layer under PyTorch's name (norm1, norm2, …); this module
/// only uses it.
/// <para>Keeps for the backward: the residual's gradient between the two backward calls (and what the norm and dropout keep).</para>
/// </summary>
public sealed class SublayerConnection : Module
{
    private readonly ElementwiseKernels elementwise;
    private readonly LayerNorm norm;
    private readonly Tensor<float> sum;
    private readonly Tensor<float> inputGradient;
    private Tensor<float>? sumGradient;

    /// <summary>The connection around one sub-layer, using <paramref name="norm"/> (registered by the caller).</summary>
    public SublayerConnection(ComputeDevice device, LayerNorm norm, bool normFirst, float dropout, DropoutStream dropoutStream)
        : base(device)
    {
        ArgumentNullException.ThrowIfNull(norm);
        this.norm = norm;
        NormFirst = normFirst;
        Dropout = Child("dropout", new Dropout(device, dropout, dropoutStream));
        elementwise = device.Kernels<ElementwiseKernels>();
        sum = Buffer<float>(1);
        inputGradient = Buffer<float>(1);
    }

    /// <summary>Pre-LN (norm before the sub-layer) rather than post-LN.</summary>
    public bool NormFirst { get; }

    /// <summary>The dropout on the sub-layer's output.</summary>
    public Dropout Dropout { get; }

    /// <summary>What the sub-layer reads: norm(x) in pre-LN, x in post-LN. // [B, T, E]</summary>
    public Tensor<float> SublayerInput(Tensor<float> x) => NormFirst ? norm.Forward(x) : x;

    /// <summary>Adds the sub-layer's output to the residual stream x (and normalises, post-LN). // x, f [B, T, E] → [B, T, E]</summary>
    public Tensor<float> Forward(Tensor<float> x, Tensor<float> sublayerOutput)
    {
        ArgumentNullException.ThrowIfNull(x);
        var f = Dropout.Forward(sublayerOutput);
        if (!f.HasShapeOf(x))
            throw new ArgumentException($"The sub-layer output has shape {f} but the residual stream has shape {x}.", nameof(sublayerOutput));
        sum.ResizeLike(x, x.Dim(-1));
        elementwise.Add(sum.View, x.View, f.View, x.Length);         // x + dropout(f)
        return NormFirst ? sum : norm.Forward(sum);
    }

    /// <summary>Gradient of the sub-layer's output from dy; keeps the residual's gradient for <see cref="Backward"/>. // [B, T, E]</summary>
    public Tensor<float> BackwardToSublayer(Tensor<float> dOutput)
    {
        sumGradient = NormFirst ? dOutput : norm.Backward(dOutput);
        return Dropout.Backward(sumGradient);
    }

    /// <summary>dx = (residual path) + (sub-layer path, through the norm in pre-LN). // dSublayerInput [B, T, E] → dx [B, T, E]</summary>
    public Tensor<float> Backward(Tensor<float> dSublayerInput)
    {
        var dSum = sumGradient ?? throw new InvalidOperationException("SublayerConnection.Backward needs BackwardToSublayer first.");
        var dx = NormFirst ? norm.Backward(dSublayerInput) : dSublayerInput;
        inputGradient.ResizeLike(dx, dx.Dim(-1));
        elementwise.Add(inputGradient.View, dx.View, dSum.View, dx.Length);
        sumGradient = null;
        return inputGradient;
    }
}
