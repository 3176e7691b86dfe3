namespace GpuTransformer.Kernels.Reference;

/// <summary>Float ↔ double conversions of the references.</summary>
internal static class Precision
{
    public static double[] ToDouble(ReadOnlySpan<float> values)
    {
        var result = new double[values.Length];
        for (var i = 0; i < values.Length; i++)
            result[i] = values[i];
        return result;
    }

    public static float[] ToFloat(ReadOnlySpan<double> values)
    {
        var result = new float[values.Length];
        for (var i = 0; i < values.Length; i++)
            result[i] = (float)values[i];
        return result;
    }
}
