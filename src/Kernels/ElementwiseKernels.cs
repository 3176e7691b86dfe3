using GpuTransformer.Kernels.Backends;
using ILGPU;
using ILGPU.Runtime;

namespace GpuTransformer.Kernels;

/// <summary>
/// Elementwise kernels: the residual add and its backward (gradient accumulation),
/// scaling and filling. One thread per element; the backward of a residual add is a copy
/// of the incoming gradient into both branches, done by <see cref="AddInto"/>.
/// </summary>
public sealed class ElementwiseKernels : IKernelFamily<ElementwiseKernels>
{
    private readonly ComputeDevice device;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>> add;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, float> addScaledInto;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, float> scale;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, float> fill;

    private ElementwiseKernels(ComputeDevice device)
    {
        this.device = device;
        var accelerator = device.Accelerator;
        add = accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>>(AddKernel);
        addScaledInto = accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, float>(AddScaledIntoKernel);
        scale = accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, float>(ScaleKernel);
        fill = accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, float>(FillKernel);
    }

    /// <inheritdoc/>
    public static ElementwiseKernels Create(ComputeDevice device) => new(device);

    /// <inheritdoc/>
    public static IEnumerable<KernelEntry> EntryPoints(KernelTuning tuning) =>
    [
        KernelEntry.Of(AddKernel),
        KernelEntry.Of(AddScaledIntoKernel),
        KernelEntry.Of(ScaleKernel),
        KernelEntry.Of(FillKernel),
    ];

    /// <summary>Residual add: output = a + b. Output may alias a or b.</summary>
    public void Add(ArrayView<float> output, ArrayView<float> a, ArrayView<float> b, int count)
    {
        Require.Positive(count, nameof(count));
        Require.Holds(output, count, nameof(output), $"[{count}]");
        Require.Holds(a, count, nameof(a), $"[{count}]");
        Require.Holds(b, count, nameof(b), $"[{count}]");
        using var profile = device.Profile("Elementwise", "add", 0, 3.0 * sizeof(float) * count);
        add(device.Stream, count, output, a, b);
    }

    /// <summary>Gradient accumulation: target += alpha · source.</summary>
    public void AddInto(ArrayView<float> target, ArrayView<float> source, int count, float alpha = 1f)
    {
        Require.Positive(count, nameof(count));
        Require.Holds(target, count, nameof(target), $"[{count}]");
        Require.Holds(source, count, nameof(source), $"[{count}]");
        using var profile = device.Profile("Elementwise", "add scaled", 0, 3.0 * sizeof(float) * count);
        addScaledInto(device.Stream, count, target, source, alpha);
    }

    /// <summary>output = alpha · input. Output may alias input.</summary>
    public void Scale(ArrayView<float> output, ArrayView<float> input, float alpha, int count)
    {
        Require.Positive(count, nameof(count));
        Require.Holds(output, count, nameof(output), $"[{count}]");
        Require.Holds(input, count, nameof(input), $"[{count}]");
        using var profile = device.Profile("Elementwise", "scale", 0, 2.0 * sizeof(float) * count);
        scale(device.Stream, count, output, input, alpha);
    }

    /// <summary>output[i] = value.</summary>
    public void Fill(ArrayView<float> output, float value, int count)
    {
        Require.Positive(count, nameof(count));
        Require.Holds(output, count, nameof(output), $"[{count}]");
        using var profile = device.Profile("Elementwise", "fill", 0, 1.0 * sizeof(float) * count);
        fill(device.Stream, count, output, value);
    }

    private static void AddKernel(Index1D i, ArrayView<float> output, ArrayView<float> a, ArrayView<float> b) =>
        output[i] = a[i] + b[i];

    private static void AddScaledIntoKernel(Index1D i, ArrayView<float> target, ArrayView<float> source, float alpha) =>
        target[i] += alpha * source[i];

    private static void ScaleKernel(Index1D i, ArrayView<float> output, ArrayView<float> input, float alpha) =>
        output[i] = alpha * input[i];

    private static void FillKernel(Index1D i, ArrayView<float> output, float value) =>
        output[i] = value;
}
