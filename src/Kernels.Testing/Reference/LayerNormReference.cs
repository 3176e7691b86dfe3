namespace GpuTransformer.Kernels.Reference;

/// <summary>Plain C# twin of <see cref="LayerNormKernels"/>, computing in double (two-pass mean and biased variance).</summary>
public static class LayerNormReference
{
    /// <summary>y = (x − mean)·rstd·γ + β per row of [rows, columns], with the saved mean [rows] and rstd [rows].</summary>
    public static (float[] Output, float[] Mean, float[] Rstd) Forward(
        ReadOnlySpan<float> input, ReadOnlySpan<float> gamma, ReadOnlySpan<float> beta, int rows, int columns, float eps = 1e-5f)
    {
        var (output, mean, rstd) = Forward(Precision.ToDouble(input), Precision.ToDouble(gamma), Precision.ToDouble(beta), rows, columns, eps);
        return (Precision.ToFloat(output), Precision.ToFloat(mean), Precision.ToFloat(rstd));
    }

    /// <summary>The forward in double throughout (for finite differences).</summary>
    public static (double[] Output, double[] Mean, double[] Rstd) Forward(
        ReadOnlySpan<double> input, ReadOnlySpan<double> gamma, ReadOnlySpan<double> beta, int rows, int columns, double eps = 1e-5)
    {
        var output = new double[rows * columns];
        var means = new double[rows];
        var rstds = new double[rows];
        for (var r = 0; r < rows; r++)
        {
            var (mean, rstd) = Statistics(input.Slice(r * columns, columns), eps);
            means[r] = mean;
            rstds[r] = rstd;
            for (var c = 0; c < columns; c++)
                output[r * columns + c] = (input[r * columns + c] - mean) * rstd * gamma[c] + beta[c];
        }
        return (output, means, rstds);
    }

    /// <summary>
    /// dx, dγ, dβ for upstream gradient dy, with the row statistics recomputed exactly from x
    /// (the true gradient of <see cref="Forward(ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, int, int, float)"/>).
    /// </summary>
    public static (float[] DInput, float[] DGamma, float[] DBeta) Backward(
        ReadOnlySpan<float> dOutput, ReadOnlySpan<float> input, ReadOnlySpan<float> gamma, int rows, int columns, float eps = 1e-5f)
    {
        var (dInput, dGamma, dBeta) = Backward(Precision.ToDouble(dOutput), Precision.ToDouble(input), Precision.ToDouble(gamma), rows, columns, eps);
        return (Precision.ToFloat(dInput), Precision.ToFloat(dGamma), Precision.ToFloat(dBeta));
    }

    /// <summary>
    /// dx, dγ, dβ from given row statistics, as the kernel computes them from the forward's
    /// saved float mean and rstd (for rows with a large mean, the rounding of the saved mean
    /// shifts x̂ by up to ulp(mean)/2·rstd, which the exact gradient does not see).
    /// </summary>
    public static (float[] DInput, float[] DGamma, float[] DBeta) Backward(
        ReadOnlySpan<float> dOutput, ReadOnlySpan<float> input, ReadOnlySpan<float> gamma, ReadOnlySpan<float> mean, ReadOnlySpan<float> rstd, int rows, int columns)
    {
        var (dInput, dGamma, dBeta) = Backward(
            Precision.ToDouble(dOutput), Precision.ToDouble(input), Precision.ToDouble(gamma), Precision.ToDouble(mean), Precision.ToDouble(rstd), rows, columns);
        return (Precision.ToFloat(dInput), Precision.ToFloat(dGamma), Precision.ToFloat(dBeta));
    }

    /// <summary>The backward in double throughout, statistics recomputed from x.</summary>
    public static (double[] DInput, double[] DGamma, double[] DBeta) Backward(
        ReadOnlySpan<double> dOutput, ReadOnlySpan<double> input, ReadOnlySpan<double> gamma, int rows, int columns, double eps = 1e-5)
    {
        var means = new double[rows];
        var rstds = new double[rows];
        for (var r = 0; r < rows; r++)
            (means[r], rstds[r]) = Statistics(input.Slice(r * columns, columns), eps);
        return Backward(dOutput, input, gamma, means, rstds, rows, columns);
    }

    /// <summary>The backward in double throughout, from given statistics.</summary>
    public static (double[] DInput, double[] DGamma, double[] DBeta) Backward(
        ReadOnlySpan<double> dOutput, ReadOnlySpan<double> input, ReadOnlySpan<double> gamma, ReadOnlySpan<double> means, ReadOnlySpan<double> rstds, int rows, int columns)
    {
        var dInput = new double[rows * columns];
        var dGamma = new double[columns];
        var dBeta = new double[columns];
        var normalized = new double[columns];
        for (var r = 0; r < rows; r++)
        {
            var (mean, rstd) = (means[r], rstds[r]);
            double meanG = 0, meanGX = 0;
            for (var c = 0; c < columns; c++)
            {
                normalized[c] = (input[r * columns + c] - mean) * rstd;
                var dy = dOutput[r * columns + c];
                meanG += dy * gamma[c];
                meanGX += dy * gamma[c] * normalized[c];
                dGamma[c] += dy * normalized[c];
                dBeta[c] += dy;
            }
            meanG /= columns;
            meanGX /= columns;
            for (var c = 0; c < columns; c++)
                dInput[r * columns + c] = rstd * (dOutput[r * columns + c] * gamma[c] - meanG - normalized[c] * meanGX);
        }
        return (dInput, dGamma, dBeta);
    }

    private static (double Mean, double Rstd) Statistics(ReadOnlySpan<double> row, double eps)
    {
        var mean = 0.0;
        foreach (var x in row)
            mean += x;
        mean /= row.Length;
        var variance = 0.0;
        foreach (var x in row)
            variance += (x - mean) * (x - mean);
        variance /= row.Length;
        return (mean, 1 / Math.Sqrt(variance + eps));
    }
}
