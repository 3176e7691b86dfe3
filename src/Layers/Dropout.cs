using GpuTransformer.Kernels;
using GpuTransformer.Kernels.Backends;

namespace GpuTransformer.Layers;

/// <summary>
/// Where a model's dropout random stream is: the Philox key (<see cref="Seed"/>) and the next
/// unused counter (<see cref="Offset"/>). Save it with a checkpoint and restore it to make a
/// resumed run draw the same masks as an uninterrupted one.
/// </summary>
public readonly record struct DropoutState(ulong Seed, ulong Offset);

/// <summary>
/// The counter-based random stream shared by all dropout layers of one model: each dropout
/// launch takes the next <c>count</c> counters, so masks never repeat within a run and a run
/// is reproducible from its seed.
/// </summary>
public sealed class DropoutStream(ulong seed)
{
    /// <summary>The current key and counter (settable to resume a run).</summary>
    public DropoutState State { get; set; } = new(seed, 0);

    /// <summary>Reserves <paramref name="count"/> counters and returns the first.</summary>
    internal ulong Take(int count)
    {
        var state = State;
        State = state with { Offset = state.Offset + (ulong)count };
        return state.Offset;
    }
}

/// <summary>
/// <c>nn.Dropout</c> (inverted): in training mode y = x·mask / (1 − p) with a mask drawn from
/// the model's <see cref="DropoutStream"/>; in evaluation mode, or with p = 0, y is x itself
/// (no launch, no copy).
/// <para>Keeps for the backward: whether it was active and the (seed, offset) of its mask, which the backward regenerates.</para>
/// </summary>
public sealed class Dropout : Module
{
    private readonly DropoutKernels kernels;
    private readonly DropoutStream dropoutStream;
    private readonly Tensor<float> output;
    private readonly Tensor<float> inputGradient;
    private DropoutState? mask;
    private int count;

    /// <summary>A dropout of probability p drawing its masks from <paramref name="dropoutStream"/> (the model's shared stream).</summary>
    public Dropout(ComputeDevice device, float probability, DropoutStream dropoutStream)
        : base(device)
    {
        ArgumentNullException.ThrowIfNull(dropoutStream);
        if (!(probability >= 0f && probability < 1f))
            throw new ArgumentException($"Dropout probability must be in [0, 1), got {probability}.", nameof(probability));
        Probability = probability;
        this.dropoutStream = dropoutStream;
        kernels = device.Kernels<DropoutKernels>();
        output = Buffer<float>(1);
        inputGradient = Buffer<float>(1);
    }

    /// <summary>p, the probability of zeroing an element.</summary>
    public float Probability { get; }

    /// <summary>Whether a forward now would drop anything.</summary>
    public bool Active => Training && Probability > 0f;

    /// <summary>Device bytes of its buffers after a step over <paramref name="elements"/> elements: y and dx when active (training, p &gt; 0); none as the identity.</summary>
    internal static long ActivationBytes(long elements, float probability, bool training) =>
        training && probability > 0f ? sizeof(float) * 2 * elements : 0;

    /// <summary>y = x·mask/(1 − p) when active, else x. // x [...] → y [...]</summary>
    public Tensor<float> Forward(Tensor<float> x)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (!Active)
        {
            mask = null;
            return x;
        }
        var seed = dropoutStream.State.Seed;
        var offset = dropoutStream.Take(x.Length);
        output.ResizeLike(x, x.Dim(-1));
        kernels.Forward(output.View, x.View, x.Length, Probability, seed, offset);
        (mask, count) = (new DropoutState(seed, offset), x.Length);
        return output;
    }

    /// <summary>dx = dy·mask/(1 − p) with the forward's mask, or dy itself when the forward was the identity.</summary>
    public Tensor<float> Backward(Tensor<float> dOutput)
    {
        ArgumentNullException.ThrowIfNull(dOutput);
        if (mask is not { } m)
            return dOutput;
        if (dOutput.Length != count)
            throw new ArgumentException($"dOutput has shape {dOutput} but the forward's output has {count} elements.", nameof(dOutput));
        inputGradient.ResizeLike(dOutput, dOutput.Dim(-1));
        kernels.Backward(inputGradient.View, dOutput.View, count, Probability, m.Seed, m.Offset);
        return inputGradient;
    }
}
