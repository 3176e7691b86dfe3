using GpuTransformer.Kernels.Backends;
using ILGPU;
using ILGPU.Runtime;

namespace GpuTransformer.Kernels;

/// <summary>
/// Inverted dropout with a counter-based RNG, so the mask is never stored: element i of a
/// launch is kept iff u ≥ p, where u = x₀ · 2⁻³² and x₀ is the first word of
/// Philox-4x32-10 (Salmon et al., SC'11; Random123) at counter (offset + i) under key seed.
/// The backward regenerates the same mask from (seed, offset). The mask is a pure function
/// of (seed, offset + i, p): identical on every backend.
/// <para>
/// Callers give every launch its own counter range (advance offset by the element count),
/// or a fresh seed; reusing (seed, offset) reuses the mask.
/// </para>
/// </summary>
public sealed class DropoutKernels : IKernelFamily<DropoutKernels>
{
    // Philox-4x32 multipliers and Weyl key increments (Random123).
    private const uint M0 = 0xD2511F53;
    private const uint M1 = 0xCD9E8D57;
    private const uint W0 = 0x9E3779B9;
    private const uint W1 = 0xBB67AE85;

    private readonly ComputeDevice device;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, MaskParameters> apply;

    private DropoutKernels(ComputeDevice device)
    {
        this.device = device;
        apply = device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, MaskParameters>(ApplyMaskKernel);
    }

    /// <inheritdoc/>
    public static DropoutKernels Create(ComputeDevice device) => new(device);

    /// <inheritdoc/>
    public static IEnumerable<KernelEntry> EntryPoints(KernelTuning tuning) => [KernelEntry.Of(ApplyMaskKernel)];

    /// <summary>
    /// output[i] = input[i] · keep(i) / (1 − p), keep(i) from Philox(seed, offset + i).
    /// p = 0 is the identity. Output may alias input.
    /// </summary>
    /// <exception cref="ArgumentException">p outside [0, 1), a non-positive count, short views, or views overlapping with a shift.</exception>
    public void Forward(ArrayView<float> output, ArrayView<float> input, int count, float probability, ulong seed, ulong offset) =>
        Launch(output, nameof(output), input, nameof(input), count, probability, seed, offset);

    /// <summary>
    /// dInput[i] = dOutput[i] · keep(i) / (1 − p) with the mask of the forward launch that used
    /// the same (p, seed, offset). dInput may alias dOutput.
    /// </summary>
    /// <exception cref="ArgumentException">p outside [0, 1), a non-positive count, short views, or views overlapping with a shift.</exception>
    public void Backward(ArrayView<float> dInput, ArrayView<float> dOutput, int count, float probability, ulong seed, ulong offset) =>
        Launch(dInput, nameof(dInput), dOutput, nameof(dOutput), count, probability, seed, offset);

    /// <summary>
    /// The integer form of "keep iff x₀ · 2⁻³² ≥ p": keep iff x₀ ≥ ⌈p · 2³²⌉ (exact, since
    /// p · 2³² is exact in double for a float p).
    /// </summary>
    internal static uint KeepThreshold(float probability)
    {
        RequireProbability(probability);
        return (uint)Math.Min(Math.Ceiling(probability * 4294967296.0), uint.MaxValue);
    }

    /// <summary>The first output word of Philox-4x32-10 for the 64-bit <paramref name="counter"/> (words 0, 1; words 2, 3 zero) and <paramref name="seed"/> as the key.</summary>
    public static uint Random(ulong seed, ulong counter) =>
        Philox4x32x10((uint)counter, (uint)(counter >> 32), 0, 0, (uint)seed, (uint)(seed >> 32)).X0;

    /// <summary>Philox-4x32-10 (device and host): 10 rounds, key bumped between rounds.</summary>
    internal static PhiloxBlock Philox4x32x10(uint c0, uint c1, uint c2, uint c3, uint k0, uint k1)
    {
        for (var round = 0; round < 10; round++)
        {
            if (round > 0)
            {
                k0 += W0;
                k1 += W1;
            }
            var product0 = (ulong)M0 * c0;
            var product1 = (ulong)M1 * c2;
            var next0 = (uint)(product1 >> 32) ^ c1 ^ k0;
            var next2 = (uint)(product0 >> 32) ^ c3 ^ k1;
            c1 = (uint)product1;
            c3 = (uint)product0;
            c0 = next0;
            c2 = next2;
        }
        return new PhiloxBlock(c0, c1, c2, c3);
    }

    private void Launch(ArrayView<float> output, string outputName, ArrayView<float> input, string inputName, int count, float probability, ulong seed, ulong offset)
    {
        Require.Positive(count, nameof(count));
        var threshold = KeepThreshold(probability);
        Require.Holds(output, count, outputName, $"[{count}]");
        Require.Holds(input, count, inputName, $"[{count}]");
        (output, input) = (output.SubView(0, count), input.SubView(0, count)); // overlap checks see the used ranges only
        Require.SameOrDisjoint(output, outputName, input, inputName);
        var scale = (float)(1.0 / (1.0 - probability));
        using var profile = device.Profile("Dropout", "apply", 0, 2.0 * sizeof(float) * count);
        apply(device.Stream, count, output, input, new MaskParameters(seed, offset, threshold, scale));
    }

    private static void RequireProbability(float probability)
    {
        if (!(probability >= 0f && probability < 1f))
            throw new ArgumentException($"Dropout probability must be in [0, 1), got {probability}.", nameof(probability));
    }

    /// <summary>Mask parameters of one launch, packed to keep the kernel signature short.</summary>
    internal readonly record struct MaskParameters(ulong Seed, ulong Offset, uint Threshold, float Scale);

    private static void ApplyMaskKernel(Index1D i, ArrayView<float> output, ArrayView<float> input, MaskParameters mask)
    {
        var keep = Random(mask.Seed, mask.Offset + (ulong)i.X) >= mask.Threshold;
        output[i] = input[i] * (keep ? mask.Scale : 0f); // a product, as PyTorch: NaN stays NaN
    }
}

/// <summary>The four 32-bit output words of one Philox-4x32 block.</summary>
internal readonly record struct PhiloxBlock(uint X0, uint X1, uint X2, uint X3);
