using GpuTransformer.Kernels;
using GpuTransformer.Kernels.Backends;

namespace GpuTransformer.Layers;

/// <summary>
/// The residual connection's sum: y = x + f, f the sub-layer's (dropped-out) output. Its
/// backward is where the two paths leaving x meet again: dx = dy (straight through the sum) +
/// the gradient that came back through the sub-layer. One per residual block of a layer; the
/// layer writes the block out around it (<see cref="EncoderLayer"/>, <see cref="DecoderLayer"/>).
/// <para>Keeps for the backward: nothing (a sum passes its gradient to both inputs unchanged).</para>
/// </summary>
public sealed class Residual : Module
{
    private readonly ElementwiseKernels elementwise;
    private readonly Tensor<float> sum;
    private readonly Tensor<float> inputGradient;

    /// <summary>A residual sum with its own output and gradient buffers.</summary>
    public Residual(ComputeDevice device)
        : base(device)
    {
        elementwise = device.Kernels<ElementwiseKernels>();
        sum = Buffer<float>(1);
        inputGradient = Buffer<float>(1);
    }

    /// <summary>Device bytes of its buffers after a step over <paramref name="rows"/> rows: the sum [rows, E] (+ dx when training).</summary>
    internal static long ActivationBytes(long rows, int dModel, bool training) => sizeof(float) * rows * dModel * (training ? 2 : 1);

    /// <summary>x + f. // x, f [B, T, E] → [B, T, E]</summary>
    /// <exception cref="ArgumentException">f and x have different shapes.</exception>
    public Tensor<float> Forward(Tensor<float> x, Tensor<float> sublayerOutput)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(sublayerOutput);
        if (!sublayerOutput.HasShapeOf(x))
            throw new ArgumentException($"The sub-layer output has shape {sublayerOutput} but the residual stream has shape {x}.", nameof(sublayerOutput));
        sum.ResizeLike(x, x.Dim(-1));
        elementwise.Add(sum.View, x.View, sublayerOutput.View, x.Length);
        return sum;
    }

    /// <summary>dx = dy + dx through the sub-layer. // dy, dThroughSublayer [B, T, E] → dx [B, T, E]</summary>
    public Tensor<float> Backward(Tensor<float> dOutput, Tensor<float> dThroughSublayer)
    {
        ArgumentNullException.ThrowIfNull(dOutput);
        ArgumentNullException.ThrowIfNull(dThroughSublayer);
        if (!dThroughSublayer.HasShapeOf(dOutput))
            throw new ArgumentException($"The gradient through the sub-layer has shape {dThroughSublayer} but dy has shape {dOutput}.", nameof(dThroughSublayer));
        inputGradient.ResizeLike(dOutput, dOutput.Dim(-1));
        elementwise.Add(inputGradient.View, dThroughSublayer.View, dOutput.View, dOutput.Length);
        return inputGradient;
    }
}
