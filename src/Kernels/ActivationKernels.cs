using GpuTransformer.Kernels.Backends;
using ILGPU;
using ILGPU.Runtime;

namespace GpuTransformer.Kernels;

/// <summary>
/// Elementwise activations of the feed-forward block (ReLU, GELU tanh, GELU erf) and their
/// backward. One thread per element; the math is <see cref="ActivationFunctions"/>, the same
/// code the matmul epilogue runs, so a fused and an unfused feed-forward agree. Each
/// activation is its own kernel instantiation (a struct type parameter), so the element
/// loop is straight-line code the OpenCL CPU compiler can vectorize.
/// </summary>
public sealed class ActivationKernels : IKernelFamily<ActivationKernels>
{
    private readonly ComputeDevice device;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>>[] forward;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>>[] backward;

    private ActivationKernels(ComputeDevice device)
    {
        this.device = device;
        var accelerator = device.Accelerator;
        forward = [.. Instantiations.Select(k => accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>>(k.Forward))];
        backward = [.. Instantiations.Select(k => accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>>(k.Backward))];
    }

    /// <summary>The kernels of each <see cref="Activation"/>, indexed by its value.</summary>
    private static (Action<Index1D, ArrayView<float>, ArrayView<float>> Forward, Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>> Backward)[] Instantiations =>
    [
        (ForwardKernel<Identity>, BackwardKernel<Identity>),
        (ForwardKernel<Relu>, BackwardKernel<Relu>),
        (ForwardKernel<GeluTanh>, BackwardKernel<GeluTanh>),
        (ForwardKernel<GeluErf>, BackwardKernel<GeluErf>),
    ];

    /// <inheritdoc/>
    public static ActivationKernels Create(ComputeDevice device) => new(device);

    /// <inheritdoc/>
    public static IEnumerable<KernelEntry> EntryPoints(KernelTuning tuning) =>
        Instantiations.SelectMany(k => new[] { KernelEntry.Of(k.Forward), KernelEntry.Of(k.Backward) });

    /// <summary>output[i] = f(input[i]) over <paramref name="count"/> elements. Output may alias input.</summary>
    /// <exception cref="ArgumentException">Non-positive count, a view shorter than count, an unknown activation, or views overlapping with a shift.</exception>
    public void Forward(ArrayView<float> output, ArrayView<float> input, int count, Activation activation)
    {
        Require.Positive(count, nameof(count));
        RequireKnown(activation);
        Require.Holds(output, count, nameof(output), $"[{count}]");
        Require.Holds(input, count, nameof(input), $"[{count}]");
        (output, input) = (output.SubView(0, count), input.SubView(0, count)); // overlap checks see the used ranges only
        Require.SameOrDisjoint(output, nameof(output), input, nameof(input));
        using var profile = device.Profile("Activation", "forward", 0, 2.0 * sizeof(float) * count);
        forward[(int)activation](device.Stream, count, output, input);
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
        (dInput, dOutput, input) = (dInput.SubView(0, count), dOutput.SubView(0, count), input.SubView(0, count));
        Require.SameOrDisjoint(dInput, nameof(dInput), dOutput, nameof(dOutput));
        Require.SameOrDisjoint(dInput, nameof(dInput), input, nameof(input));
        using var profile = device.Profile("Activation", "backward", 0, 3.0 * sizeof(float) * count);
        backward[(int)activation](device.Stream, count, dInput, dOutput, input);
    }

    private static void RequireKnown(Activation activation)
    {
        if (!Enum.IsDefined(activation))
            throw new ArgumentException($"Unknown activation {(int)activation}.", nameof(activation));
    }

    /// <summary>An activation as a kernel type parameter.</summary>
    internal interface IActivation
    {
        float Apply(float x);

        float Derivative(float x);
    }

    internal readonly struct Identity : IActivation
    {
        public float Apply(float x) => x;

        public float Derivative(float x) => 1f;
    }

    internal readonly struct Relu : IActivation
    {
        public float Apply(float x) => ActivationFunctions.Relu(x);

        public float Derivative(float x) => ActivationFunctions.Derivative((int)Activation.Relu, x);
    }

    internal readonly struct GeluTanh : IActivation
    {
        public float Apply(float x) => ActivationFunctions.Gelu(x);

        public float Derivative(float x) => ActivationFunctions.GeluDerivative(x);
    }

    internal readonly struct GeluErf : IActivation
    {
        public float Apply(float x) => ActivationFunctions.GeluExact(x);

        public float Derivative(float x) => ActivationFunctions.GeluExactDerivative(x);
    }

    private static void ForwardKernel<TActivation>(Index1D i, ArrayView<float> output, ArrayView<float> input)
        where TActivation : struct, IActivation =>
        output[i] = default(TActivation).Apply(input[i]);

    private static void BackwardKernel<TActivation>(Index1D i, ArrayView<float> dInput, ArrayView<float> dOutput, ArrayView<float> input)
        where TActivation : struct, IActivation =>
        dInput[i] = dOutput[i] * default(TActivation).Derivative(input[i]);
}
