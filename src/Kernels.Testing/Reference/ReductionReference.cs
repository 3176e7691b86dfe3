namespace GpuTransformer.Kernels.Reference;

/// <summary>Plain C# twin of <see cref="ReductionKernels"/>, summing in double.</summary>
public static class ReductionReference
{
    /// <summary>(accumulate ? output : 0) + Σ_m input[m, n]. // [rows, columns] → [columns]</summary>
    public static float[] ColumnSums(ReadOnlySpan<float> input, int rows, int columns, ReadOnlySpan<float> output = default, bool accumulate = false)
    {
        var sums = new float[columns];
        for (var n = 0; n < columns; n++)
        {
            var sum = accumulate ? (double)output[n] : 0.0;
            for (var m = 0; m < rows; m++)
                sum += input[m * columns + n];
            sums[n] = (float)sum;
        }
        return sums;
    }

    /// <summary>Σ input[i].</summary>
    public static float Sum(ReadOnlySpan<float> input)
    {
        var sum = 0.0;
        foreach (var x in input)
            sum += x;
        return (float)sum;
    }

    /// <summary>√(Σ over all buffers of Σ x²): the global L2 norm of <c>clip_grad_norm_</c>.</summary>
    public static float GlobalNorm(IEnumerable<float[]> buffers)
    {
        ArgumentNullException.ThrowIfNull(buffers);
        var sum = 0.0;
        foreach (var buffer in buffers)
        {
            foreach (var x in buffer)
                sum += (double)x * x;
        }
        return (float)Math.Sqrt(sum);
    }

    /// <summary>The clip factor min(1, maxNorm / (norm + 10⁻⁶)).</summary>
    public static float ClipFactor(double norm, double maxNorm) => (float)Math.Min(1.0, maxNorm / (norm + 1e-6));
}
