using GpuTransformer.Kernels;
using GpuTransformer.Kernels.Backends;

namespace GpuTransformer.Layers;

/// <summary>
/// The position-wise feed-forward network of PyTorch's Transformer layers:
/// FFN(x) = linear2(dropout(act(linear1(x)))), linear1 [d_ff, E], linear2 [E, d_ff], act relu,
/// gelu (exact erf) or gelu_tanh. Registered on its layer with an empty name, so its parameters
/// are the layer's <c>linear1.*</c> and <c>linear2.*</c> as in PyTorch.
/// <para>Keeps for the backward: the pre-activation h = linear1(x) (for act′), plus what its linears and dropout keep.</para>
/// </summary>
public sealed class FeedForward : Module
{
    private readonly ActivationKernels activations;
    private readonly Tensor<float> activated;
    private readonly Tensor<float> preActivationGradient;
    private Tensor<float>? preActivation;

    /// <summary>E → d_ff → E with nn.Linear's initialisation.</summary>
    public FeedForward(ComputeDevice device, int dModel, int dimFeedforward, Activation activation, float dropout, DropoutStream dropoutStream, ParameterInitializer init)
        : base(device)
    {
        if (activation == Activation.None || !Enum.IsDefined(activation))
            throw new ArgumentException($"The feed-forward activation must be relu, gelu or gelu_tanh, got {activation}.", nameof(activation));
        Activation = activation;
        Linear1 = Child("linear1", new Linear(device, dModel, dimFeedforward, bias: true, init));
        Dropout = Child("dropout", new Dropout(device, dropout, dropoutStream));
        Linear2 = Child("linear2", new Linear(device, dimFeedforward, dModel, bias: true, init));
        activations = device.Kernels<ActivationKernels>();
        activated = Buffer<float>(1);
        preActivationGradient = Buffer<float>(1);
    }

    /// <summary>relu, gelu (erf) or gelu_tanh.</summary>
    public Activation Activation { get; }

    /// <summary>E → d_ff.</summary>
    public Linear Linear1 { get; }

    /// <summary>Dropout after the activation (PyTorch's <c>dropout</c> inside the layer).</summary>
    public Dropout Dropout { get; }

    /// <summary>d_ff → E.</summary>
    public Linear Linear2 { get; }

    /// <summary>Learnable scalars: linear1 and linear2 with their biases.</summary>
    internal static long ParameterCount(int dModel, int dimFeedforward) =>
        Linear.ParameterCount(dModel, dimFeedforward, bias: true) + Linear.ParameterCount(dimFeedforward, dModel, bias: true);

    /// <summary>Device bytes of its buffers after a step over <paramref name="rows"/> rows: the linears', act(h) [rows, d_ff] (+ dh when training) and the dropout's.</summary>
    internal static long ActivationBytes(long rows, int dModel, int dimFeedforward, float dropout, bool training) =>
        Linear.ActivationBytes(rows, dModel, dimFeedforward, training)
        + (sizeof(float) * rows * dimFeedforward * (training ? 2 : 1))
        + Dropout.ActivationBytes(rows * dimFeedforward, dropout, training)
        + Linear.ActivationBytes(rows, dimFeedforward, dModel, training);

    /// <summary>The pre-activation of the last forward [..., d_ff] (tests read it to avoid ReLU kinks).</summary>
    internal Tensor<float>? PreActivation => preActivation;

    /// <summary>FFN(x). // x [B, T, E] → [B, T, E]</summary>
    public Tensor<float> Forward(Tensor<float> x)
    {
        var h = Linear1.Forward(x);                                    // [B, T, d_ff]
        activated.ResizeLike(h, h.Dim(-1));
        activations.Forward(activated.View, h.View, h.Length, Activation);
        preActivation = h;
        return Linear2.Forward(Dropout.Forward(activated));            // [B, T, E]
    }

    /// <summary>
    /// Decoding, evaluation mode, no backward: residual += FFN(x) in place, the activation in
    /// linear1's epilogue and the residual sum in linear2's (two launches for the block). An
    /// evaluation-mode <see cref="Forward"/> may still be trained through, so it stays unfused.
    /// // x [B, T, E], residual [B, T, E] → residual
    /// </summary>
    internal Tensor<float> ForwardAddInto(Tensor<float> residual, Tensor<float> x)
    {
        if (Training)
            throw new InvalidOperationException("FeedForward.ForwardAddInto is for evaluation mode (dropout would be skipped).");
        preActivation = null;
        return Linear2.ForwardAddInto(residual, Linear1.ForwardActivated(x, Activation));
    }

    /// <summary>dx, accumulating the linears' gradients. // dy [B, T, E] → dx [B, T, E]</summary>
    public Tensor<float> Backward(Tensor<float> dOutput)
    {
        var h = preActivation ?? throw new InvalidOperationException("FeedForward.Backward needs a Forward first.");
        var dActivated = Dropout.Backward(Linear2.Backward(dOutput));  // [B, T, d_ff]
        preActivationGradient.ResizeLike(h, h.Dim(-1));
        activations.Backward(preActivationGradient.View, dActivated.View, h.View, h.Length, Activation);
        return Linear1.Backward(preActivationGradient);                // [B, T, E]
    }
}
