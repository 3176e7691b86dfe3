using GpuTransformer.Kernels.Backends;
using ILGPU;
using ILGPU.Runtime;

namespace GpuTransformer.Kernels;

/// <summary>
/// Elementwise activations of the feed-forward block (ReLU, GELU tanh, GELU erf) and their
/// backward. One thread per element; the math is <see cref="ActivationFunctions"/>, the same
/// code the matmul epilogue runs, so a fused and an unfused feed-forward agree.
/// </summary>
public sealed class Activations : IKernelFamily<Activations>
{
    private readonly ComputeDevice device;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, int> forward;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int> backward;

    private Activations(ComputeDevice device)
    {
        this.device = device;
        var accelerator = device.Accelerator;
        forward = accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, int>(ForwardKernel);
        backward = accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int>(BackwardKernel);
    }

    /// <inheritdoc/>
    public static Activations Create(ComputeDevice device) => new(device);

    /// <inheritdoc/>
    public static IEnumerable<KernelEntry> EntryPoints(KernelTuning tuning) =>
    [
        KernelEntry.Of(ForwardKernel),
        KernelEntry.Of(BackwardKernel),
    ];

    /// <summary>output[i] = f(input[i]) over <paramref name="count"/> elements. Output may alias input.</summary>
    /// <exception cref="ArgumentException">Non-positive count, a view shorter than count, an unknown activation, or views overlapping with a shift.</exception>
    public void Forward(ArrayView<float> output, ArrayView<float> input, int count, Activation activation)
    {
        Require.Positive(count, nameof(count));
        RequireKnown(activation);
        Require.Holds(output, count, nameof(output), $"[{count}]");
        Require.Holds(input, count, nameof(input), $"[{count}]");
        Require.SameOrDisjoint(output, nameof(output), input, nameof(input));
        forward(device.Stream, count, output, input, (int)activation);
    }

    /// <summary>
    /// dInput[i] = dOutput[i] · f'(input[i]), where <paramref name="input"/> is the
    /// pre-activation forward input. dInput may alias dOutput or input.
    /// </summary>
    /// <exception cref="ArgumentException">Non-positive count, a view shorter than count, an unknown activation, or views overlapping with a shift.</exception>
    public void Backward(ArrayView<float> dInput, ArrayView<float> dOutput, ArrayView<float> input, int count, Activation activation)
    {
        Require.Positive(count, nameof(count));
        RequireKnown(activation);
        Require.Holds(dInput, count, nameof(dInput), $"[{count}]");
        Require.Holds(dOutput, count, nameof(dOutput), $"[{count}]");
        Require.Holds(input, count, nameof(input), $"[{count}]");
        Require.SameOrDisjoint(dInput, nameof(dInput), dOutput, nameof(dOutput));
        Require.SameOrDisjoint(dInput, nameof(dInput), input, nameof(input));
        backward(device.Stream, count, dInput, dOutput, input, (int)activation);
    }

    private static void RequireKnown(Activation activation)
    {
        if (!Enum.IsDefined(activation))
            throw new ArgumentException($"Unknown activation {(int)activation}.", nameof(activation));
    }

    private static void ForwardKernel(Index1D i, ArrayView<float> output, ArrayView<float> input, int activation) =>
        output[i] = ActivationFunctions.Apply(activation, input[i]);

    private static void BackwardKernel(Index1D i, ArrayView<float> dInput, ArrayView<float> dOutput, ArrayView<float> input, int activation) =>
        dInput[i] = dOutput[i] * ActivationFunctions.Derivative(activation, input[i]);
}
