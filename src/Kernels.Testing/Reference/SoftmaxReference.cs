namespace GpuTransformer.Kernels.Reference;

/// <summary>Plain C# twin of <see cref="SoftmaxKernels"/>, computing in double.</summary>
public static class SoftmaxReference
{
    /// <summary>softmax(scale · x) per row of [rows, columns], masked entries 0, empty rows all 0.</summary>
    public static float[] Forward(ReadOnlySpan<float> input, int rows, int columns, SoftmaxOptions? options = null) =>
        Precision.ToFloat(Forward(Precision.ToDouble(input), rows, columns, options));

    /// <summary><see cref="Forward(ReadOnlySpan{float}, int, int, SoftmaxOptions?)"/> in double throughout (for finite differences).</summary>
    public static double[] Forward(ReadOnlySpan<double> input, int rows, int columns, SoftmaxOptions? options = null)
    {
        options ??= SoftmaxOptions.Default;
        var output = new double[rows * columns];
        for (var r = 0; r < rows; r++)
        {
            var max = double.NegativeInfinity;
            for (var j = 0; j < columns; j++)
            {
                if (Visible(options, r, j))
                    max = Math.Max(max, options.Scale * input[r * columns + j]);
            }
            if (double.IsNegativeInfinity(max))
                continue; // nothing visible: zeros
            var sum = 0.0;
            for (var j = 0; j < columns; j++)
            {
                if (Visible(options, r, j))
                    sum += Math.Exp(options.Scale * input[r * columns + j] - max);
            }
            for (var j = 0; j < columns; j++)
            {
                if (Visible(options, r, j))
                    output[r * columns + j] = Math.Exp(options.Scale * input[r * columns + j] - max) / sum;
            }
        }
        return output;
    }

    /// <summary>dx = scale · y ∘ (dy − Σ dy·y) per row, 0 at masked entries.</summary>
    public static float[] Backward(ReadOnlySpan<float> output, ReadOnlySpan<float> dOutput, int rows, int columns, SoftmaxOptions? options = null) =>
        Precision.ToFloat(Backward(Precision.ToDouble(output), Precision.ToDouble(dOutput), rows, columns, options));

    /// <summary><see cref="Backward(ReadOnlySpan{float}, ReadOnlySpan{float}, int, int, SoftmaxOptions?)"/> in double throughout.</summary>
    public static double[] Backward(ReadOnlySpan<double> output, ReadOnlySpan<double> dOutput, int rows, int columns, SoftmaxOptions? options = null)
    {
        options ??= SoftmaxOptions.Default;
        var dInput = new double[rows * columns];
        for (var r = 0; r < rows; r++)
        {
            var dot = 0.0;
            for (var j = 0; j < columns; j++)
            {
                if (Visible(options, r, j))
                    dot += dOutput[r * columns + j] * output[r * columns + j];
            }
            for (var j = 0; j < columns; j++)
            {
                if (Visible(options, r, j))
                    dInput[r * columns + j] = options.Scale * output[r * columns + j] * (dOutput[r * columns + j] - dot);
            }
        }
        return dInput;
    }

    /// <summary>Whether key <paramref name="column"/> is visible to row <paramref name="row"/>: query i = row mod Tq sees j ≤ i + offset.</summary>
    public static bool Visible(SoftmaxOptions options, int row, int column)
    {
        ArgumentNullException.ThrowIfNull(options);
        return !options.Causal || column <= (long)(row % options.QueryLength) + options.CausalOffset;
    }
}
