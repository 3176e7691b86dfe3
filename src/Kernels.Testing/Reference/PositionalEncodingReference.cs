namespace GpuTransformer.Kernels.Reference;

/// <summary>Plain C# twin of <see cref="PositionalEncodingKernels"/>: the paper's formula in double.</summary>
public static class PositionalEncodingReference
{
    /// <summary>PE[position, column] = sin/cos(position · exp(2i · −ln(10000)/d)), i = column/2, in double.</summary>
    public static double Value(long position, int column, int dModel)
    {
        var angle = position * Math.Exp(2 * (column / 2) * (-Math.Log(10000.0) / dModel));
        return column % 2 == 0 ? Math.Sin(angle) : Math.Cos(angle);
    }

    /// <summary>table[p, c] = PE[p + positionOffset, c]. // [positions, dModel]</summary>
    public static float[] Table(int positions, int dModel, int positionOffset = 0)
    {
        var table = new float[positions * dModel];
        for (var p = 0; p < positions; p++)
        {
            for (var c = 0; c < dModel; c++)
                table[p * dModel + c] = (float)Value((long)p + positionOffset, c, dModel);
        }
        return table;
    }

    /// <summary>output[b, t, :] = input[b, t, :] · scale + PE[t + positionOffset, :], rounded to float. // [batch, sequence, dModel]</summary>
    public static float[] Forward(ReadOnlySpan<float> input, int batch, int sequence, int dModel, float scale = 1f, int positionOffset = 0) =>
        Precision.ToFloat(Forward(Precision.ToDouble(input), batch, sequence, dModel, scale, positionOffset));

    /// <summary><see cref="Forward(ReadOnlySpan{float}, int, int, int, float, int)"/> in double throughout (for finite differences).</summary>
    public static double[] Forward(ReadOnlySpan<double> input, int batch, int sequence, int dModel, double scale = 1, int positionOffset = 0)
    {
        var output = new double[batch * sequence * dModel];
        for (var b = 0; b < batch; b++)
        {
            for (var t = 0; t < sequence; t++)
            {
                for (var c = 0; c < dModel; c++)
                {
                    var i = (b * sequence + t) * dModel + c;
                    output[i] = input[i] * scale + Value((long)t + positionOffset, c, dModel);
                }
            }
        }
        return output;
    }

    /// <summary>dInput = dOutput · scale (the encoding is constant), rounded to float.</summary>
    public static float[] Backward(ReadOnlySpan<float> dOutput, float scale = 1f) =>
        Precision.ToFloat(Backward(Precision.ToDouble(dOutput), scale));

    /// <summary><see cref="Backward(ReadOnlySpan{float}, float)"/> in double.</summary>
    public static double[] Backward(ReadOnlySpan<double> dOutput, double scale = 1)
    {
        var dInput = new double[dOutput.Length];
        for (var i = 0; i < dInput.Length; i++)
            dInput[i] = dOutput[i] * scale;
        return dInput;
    }
}
