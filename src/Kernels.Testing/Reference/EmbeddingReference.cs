namespace GpuTransformer.Kernels.Reference;

/// <summary>Plain C# twin of <see cref="EmbeddingKernels"/>, in double.</summary>
public static class EmbeddingReference
{
    /// <summary>
    /// output[n, :] = table[tokens[n], :] · scale (+ PE[(n mod T) + offset, :]), rounded to float.
    /// // output [N, C], table [V, C]
    /// </summary>
    public static float[] Forward(ReadOnlySpan<int> tokens, ReadOnlySpan<float> table, int channels, float scale = 1f, SinusoidalPositions? positions = null) =>
        Precision.ToFloat(Forward(tokens, Precision.ToDouble(table), channels, scale, positions));

    /// <summary><see cref="Forward(ReadOnlySpan{int}, ReadOnlySpan{float}, int, float, SinusoidalPositions?)"/> in double throughout (for finite differences).</summary>
    public static double[] Forward(ReadOnlySpan<int> tokens, ReadOnlySpan<double> table, int channels, double scale = 1, SinusoidalPositions? positions = null)
    {
        var output = new double[tokens.Length * channels];
        for (var n = 0; n < tokens.Length; n++)
        {
            for (var c = 0; c < channels; c++)
            {
                var value = table[tokens[n] * channels + c] * scale;
                if (positions is { } p)
                    value += PositionalEncodingReference.Value((long)(n % p.Sequence) + p.Offset, c, channels);
                output[n * channels + c] = value;
            }
        }
        return output;
    }

    /// <summary>
    /// dTable[v, :] = (accumulate ? dTable : 0) + Σ_{n: tokens[n] = v} dOutput[n, :] · scale, rounded to float.
    /// // dTable [V, C], dOutput [N, C]
    /// </summary>
    public static float[] Backward(ReadOnlySpan<float> dTable, ReadOnlySpan<float> dOutput, ReadOnlySpan<int> tokens, int channels, float scale = 1f, bool accumulate = false) =>
        Precision.ToFloat(Backward(Precision.ToDouble(dTable), Precision.ToDouble(dOutput), tokens, channels, scale, accumulate));

    /// <summary><see cref="Backward(ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{int}, int, float, bool)"/> in double throughout.</summary>
    public static double[] Backward(ReadOnlySpan<double> dTable, ReadOnlySpan<double> dOutput, ReadOnlySpan<int> tokens, int channels, double scale = 1, bool accumulate = false)
    {
        var sums = accumulate ? dTable.ToArray() : new double[dTable.Length];
        for (var n = 0; n < tokens.Length; n++)
        {
            for (var c = 0; c < channels; c++)
                sums[tokens[n] * channels + c] += dOutput[n * channels + c] * scale;
        }
        return sums;
    }
}
