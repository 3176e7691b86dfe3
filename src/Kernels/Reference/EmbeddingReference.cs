namespace GpuTransformer.Kernels.Reference;

/// <summary>Plain C# twin of <see cref="Embedding"/>, in double.</summary>
public static class EmbeddingReference
{
    /// <summary>
    /// output[n, :] = table[tokens[n], :] · scale (+ PE[(n mod T) + offset, :]).
    /// // output [N, C], table [V, C]
    /// </summary>
    public static float[] Forward(ReadOnlySpan<int> tokens, ReadOnlySpan<float> table, int channels, float scale = 1f, SinusoidalPositions? positions = null)
    {
        var output = new float[tokens.Length * channels];
        for (var n = 0; n < tokens.Length; n++)
        {
            for (var c = 0; c < channels; c++)
            {
                var value = (double)table[tokens[n] * channels + c] * scale;
                if (positions is { } p)
                    value += PositionalEncodingReference.Value((long)(n % p.Sequence) + p.Offset, c, channels);
                output[n * channels + c] = (float)value;
            }
        }
        return output;
    }

    /// <summary>
    /// dTable[v, :] = (accumulate ? dTable : 0) + Σ_{n: tokens[n] = v} dOutput[n, :] · scale.
    /// // dTable [V, C], dOutput [N, C]
    /// </summary>
    public static float[] Backward(ReadOnlySpan<float> dTable, ReadOnlySpan<float> dOutput, ReadOnlySpan<int> tokens, int channels, float scale = 1f, bool accumulate = false)
    {
        var sums = new double[dTable.Length];
        if (accumulate)
        {
            for (var i = 0; i < sums.Length; i++)
                sums[i] = dTable[i];
        }
        for (var n = 0; n < tokens.Length; n++)
        {
            for (var c = 0; c < channels; c++)
                sums[tokens[n] * channels + c] += (double)dOutput[n * channels + c] * scale;
        }
        return Array.ConvertAll(sums, s => (float)s);
    }
}
