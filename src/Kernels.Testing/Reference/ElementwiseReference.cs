namespace GpuTransformer.Kernels.Reference;

/// <summary>Plain C# twin of <see cref="ElementwiseKernels"/>, computing in double.</summary>
public static class ElementwiseReference
{
    /// <summary>output = a + b.</summary>
    public static float[] Add(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        var output = new float[a.Length];
        for (var i = 0; i < a.Length; i++)
            output[i] = (float)((double)a[i] + b[i]);
        return output;
    }

    /// <summary>target + alpha · source.</summary>
    public static float[] AddInto(ReadOnlySpan<float> target, ReadOnlySpan<float> source, float alpha)
    {
        var output = new float[target.Length];
        for (var i = 0; i < target.Length; i++)
            output[i] = (float)(target[i] + (double)alpha * source[i]);
        return output;
    }

    /// <summary>alpha · input.</summary>
    public static float[] Scale(ReadOnlySpan<float> input, float alpha)
    {
        var output = new float[input.Length];
        for (var i = 0; i < input.Length; i++)
            output[i] = (float)((double)alpha * input[i]);
        return output;
    }
}
