namespace GpuTransformer.Tests.Infrastructure;

/// <summary>Bit-for-bit comparisons (reproducibility, identity, masks).</summary>
public static class Bitwise
{
    /// <summary>The bit patterns of <paramref name="values"/> (NaN payloads and −0 included).</summary>
    public static int[] Bits(IEnumerable<float> values) => values.Select(BitConverter.SingleToInt32Bits).ToArray();
}
