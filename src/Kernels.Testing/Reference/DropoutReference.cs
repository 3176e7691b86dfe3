namespace GpuTransformer.Kernels.Reference;

/// <summary>
/// Plain C# twin of <see cref="DropoutKernels"/>: its own Philox-4x32-10 (checked against
/// Random123's known-answer vectors in the tests) and the keep rule u ≥ p in double.
/// </summary>
public static class DropoutReference
{
    private static readonly uint[] Multipliers = [0xD2511F53, 0xCD9E8D57];
    private static readonly uint[] KeyIncrements = [0x9E3779B9, 0xBB67AE85];

    /// <summary>Philox-4x32-10 of <paramref name="counter"/> (4 words) under <paramref name="key"/> (2 words).</summary>
    public static uint[] Philox4x32x10(ReadOnlySpan<uint> counter, ReadOnlySpan<uint> key)
    {
        uint[] x = [counter[0], counter[1], counter[2], counter[3]];
        uint[] k = [key[0], key[1]];
        for (var round = 0; round < 10; round++)
        {
            var hi0 = (uint)(Math.BigMul(Multipliers[0], x[0]) >> 32);
            var lo0 = unchecked(Multipliers[0] * x[0]);
            var hi1 = (uint)(Math.BigMul(Multipliers[1], x[2]) >> 32);
            var lo1 = unchecked(Multipliers[1] * x[2]);
            x = [hi1 ^ x[1] ^ k[0], lo1, hi0 ^ x[3] ^ k[1], lo0];
            k[0] = unchecked(k[0] + KeyIncrements[0]);
            k[1] = unchecked(k[1] + KeyIncrements[1]);
        }
        return x;
    }

    /// <summary>keep[i] for element i of a launch: u = x₀ · 2⁻³² ≥ p, x₀ from counter offset + i under key seed.</summary>
    public static bool[] Mask(int count, float probability, ulong seed, ulong offset)
    {
        var mask = new bool[count];
        uint[] key = [(uint)seed, (uint)(seed >> 32)];
        for (var i = 0; i < count; i++)
        {
            var counter = unchecked(offset + (ulong)i);
            var x0 = Philox4x32x10([(uint)counter, (uint)(counter >> 32), 0, 0], key)[0];
            mask[i] = x0 / 4294967296.0 >= probability;
        }
        return mask;
    }

    /// <summary>output[i] = input[i] · keep[i] / (1 − p), in double.</summary>
    public static float[] Apply(ReadOnlySpan<float> input, float probability, ulong seed, ulong offset)
    {
        var mask = Mask(input.Length, probability, seed, offset);
        var output = new float[input.Length];
        for (var i = 0; i < input.Length; i++)
            output[i] = (float)(input[i] * (mask[i] ? 1.0 : 0.0) / (1.0 - probability));
        return output;
    }
}
