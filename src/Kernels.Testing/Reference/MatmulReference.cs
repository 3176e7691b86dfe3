namespace GpuTransformer.Kernels.Reference;

/// <summary>
/// Plain C# twin of <see cref="MatmulKernels"/>: every layout, leading dimension, two-level batch,
/// alpha, accumulate, bias and activation. Sums in double and rounds the pre-activation to
/// float once; the activation is the same float function the kernels apply.
/// </summary>
public static class MatmulReference
{
    /// <summary>
    /// Returns a copy of <paramref name="c"/> in which every product of the batch has been
    /// written: C = act(alpha·op(A)·op(B) + (accumulate ? C : 0) + bias[column]). Elements no
    /// product touches (padding beyond N in a row of stride ldc) keep their values.
    /// Arguments mean what they mean for <see cref="MatmulKernels.Multiply"/>; ld 0 is packed.
    /// </summary>
    public static float[] Multiply(
        ReadOnlySpan<float> c, ReadOnlySpan<float> a, ReadOnlySpan<float> b, int m, int n, int k,
        MatmulLayout layout = MatmulLayout.NN, float alpha = 1f, bool accumulate = false,
        ReadOnlySpan<float> bias = default, Activation activation = Activation.None,
        MatmulBatch? batch = null, int lda = 0, int ldb = 0, int ldc = 0)
    {
        var products = batch ?? MatmulBatch.Single;
        lda = lda != 0 ? lda : layout == MatmulLayout.TN ? m : k;
        ldb = ldb != 0 ? ldb : layout == MatmulLayout.NT ? k : n;
        ldc = ldc != 0 ? ldc : n;
        var output = c.ToArray();
        for (var outer = 0; outer < products.Count; outer++)
        {
            for (var inner = 0; inner < products.InnerCount; inner++)
            {
                var aBase = outer * products.StrideA + inner * products.InnerStrideA;
                var bBase = outer * products.StrideB + inner * products.InnerStrideB;
                var cBase = outer * products.StrideC + inner * products.InnerStrideC;
                for (var row = 0; row < m; row++)
                {
                    for (var column = 0; column < n; column++)
                    {
                        var sum = 0.0;
                        for (var depth = 0; depth < k; depth++)
                        {
                            var aValue = layout == MatmulLayout.TN ? a[(int)(aBase + (long)depth * lda + row)] : a[(int)(aBase + (long)row * lda + depth)];
                            var bValue = layout == MatmulLayout.NT ? b[(int)(bBase + (long)column * ldb + depth)] : b[(int)(bBase + (long)depth * ldb + column)];
                            sum += (double)aValue * bValue;
                        }
                        var index = (int)(cBase + (long)row * ldc + column);
                        var value = alpha * sum;
                        if (accumulate)
                            value += output[index];
                        if (!bias.IsEmpty)
                            value += bias[column];
                        output[index] = ActivationFunctions.Apply((int)activation, (float)value);
                    }
                }
            }
        }
        return output;
    }
}
