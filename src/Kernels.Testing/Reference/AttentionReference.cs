namespace GpuTransformer.Kernels.Reference;

/// <summary>
/// Plain C# twin of <see cref="AttentionKernels"/>: materialises S and P per (batch, head) and
/// computes in double; the float overloads round to float at the end. Same strides and
/// mask semantics (a query row whose keys are all masked outputs zeros, log-sum-exp −∞,
/// zero gradients). The backward goes through the explicit softmax Jacobian rather than
/// the D = rowsum(dO∘O) shortcut the kernels use. Elements of the output spans outside
/// their strided heads are left as they are.
/// </summary>
public static class AttentionReference
{
    /// <summary>Forward in float (computed in double): O and the row log-sum-exp [B, H, Tq].</summary>
    /// <param name="keyPaddingMask">Host copy of <see cref="AttentionOptions.KeyPaddingMask"/> [B, Tk]; empty means none (the options' device view is ignored).</param>
    public static void Forward(
        Span<float> output, Span<float> logSumExp,
        ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
        AttentionShape shape, in AttentionOptions options, ReadOnlySpan<int> keyPaddingMask = default)
    {
        var o = Widen(output);
        var lse = Widen(logSumExp);
        Forward(o, lse, Widen(q), Widen(k), Widen(v), shape, options, keyPaddingMask);
        Narrow(o, Widen(output), output);
        Narrow(lse, Widen(logSumExp), logSumExp);
    }

    /// <summary>Forward in double.</summary>
    public static void Forward(
        Span<double> output, Span<double> logSumExp,
        ReadOnlySpan<double> q, ReadOnlySpan<double> k, ReadOnlySpan<double> v,
        AttentionShape shape, in AttentionOptions options, ReadOnlySpan<int> keyPaddingMask = default)
    {
        var layout = new Layout(shape, options);
        var (tq, tk, d) = (shape.QueryLength, shape.KeyLength, shape.HeadDim);
        for (var b = 0; b < shape.Batch; b++)
        {
            for (var h = 0; h < shape.Heads; h++)
            {
                var (p, rowLse) = Softmax(q, k, b, h, shape, layout, options, keyPaddingMask);
                for (var i = 0; i < tq; i++)
                {
                    logSumExp[(((b * shape.Heads) + h) * tq) + i] = rowLse[i];
                    var oRow = layout.Output.Offset(b, i, h);
                    for (var c = 0; c < d; c++)
                    {
                        var sum = 0.0;
                        for (var j = 0; j < tk; j++)
                            sum += p[i, j] * v[(int)(layout.Value.Offset(b, j, h) + c)];
                        output[(int)(oRow + c)] = sum;
                    }
                }
            }
        }
    }

    /// <summary>Backward in float (computed in double): dQ, dK, dV written at their strides (recomputes P; needs neither O nor the log-sum-exp).</summary>
    public static void Backward(
        Span<float> dq, Span<float> dk, Span<float> dv,
        ReadOnlySpan<float> dOutput, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
        AttentionShape shape, in AttentionOptions options, ReadOnlySpan<int> keyPaddingMask = default)
    {
        // dq, dk, dv may be overlapping views of one dQKV buffer: each copy writes back only the elements it changed.
        var (wq, wk, wv) = (Widen(dq), Widen(dk), Widen(dv));
        var (before, kBefore, vBefore) = (Widen(dq), Widen(dk), Widen(dv));
        Backward(wq, wk, wv, Widen(dOutput), Widen(q), Widen(k), Widen(v), shape, options, keyPaddingMask);
        Narrow(wq, before, dq);
        Narrow(wk, kBefore, dk);
        Narrow(wv, vBefore, dv);
    }

    /// <summary>
    /// Backward in double: dS = J·dP row by row with the softmax Jacobian
    /// J = diag(p) − p·pᵀ, then dQ = scale·dS·K, dK = scale·dSᵀ·Q, dV = Pᵀ·dO.
    /// </summary>
    public static void Backward(
        Span<double> dq, Span<double> dk, Span<double> dv,
        ReadOnlySpan<double> dOutput, ReadOnlySpan<double> q, ReadOnlySpan<double> k, ReadOnlySpan<double> v,
        AttentionShape shape, in AttentionOptions options, ReadOnlySpan<int> keyPaddingMask = default)
    {
        var layout = new Layout(shape, options);
        var (tq, tk, d) = (shape.QueryLength, shape.KeyLength, shape.HeadDim);
        var scale = (double)options.ScaleFor(shape);
        for (var b = 0; b < shape.Batch; b++)
        {
            for (var h = 0; h < shape.Heads; h++)
            {
                var (p, _) = Softmax(q, k, b, h, shape, layout, options, keyPaddingMask);
                var dp = new double[tq, tk];
                for (var i = 0; i < tq; i++)
                {
                    for (var j = 0; j < tk; j++)
                        dp[i, j] = Dot(dOutput, layout.OutputGradient.Offset(b, i, h), v, layout.Value.Offset(b, j, h), d);
                }
                var ds = new double[tq, tk];
                for (var i = 0; i < tq; i++)
                {
                    for (var j = 0; j < tk; j++)
                    {
                        var sum = 0.0;
                        for (var m = 0; m < tk; m++)
                            sum += ((j == m ? p[i, j] : 0.0) - (p[i, j] * p[i, m])) * dp[i, m];
                        ds[i, j] = sum;
                    }
                }
                for (var c = 0; c < d; c++)
                {
                    for (var i = 0; i < tq; i++)
                    {
                        var sum = 0.0;
                        for (var j = 0; j < tk; j++)
                            sum += ds[i, j] * k[(int)(layout.Key.Offset(b, j, h) + c)];
                        dq[(int)(layout.QueryGradient.Offset(b, i, h) + c)] = scale * sum;
                    }
                    for (var j = 0; j < tk; j++)
                    {
                        double sumK = 0.0, sumV = 0.0;
                        for (var i = 0; i < tq; i++)
                        {
                            sumK += ds[i, j] * q[(int)(layout.Query.Offset(b, i, h) + c)];
                            sumV += p[i, j] * dOutput[(int)(layout.OutputGradient.Offset(b, i, h) + c)];
                        }
                        dk[(int)(layout.KeyGradient.Offset(b, j, h) + c)] = scale * sumK;
                        dv[(int)(layout.ValueGradient.Offset(b, j, h) + c)] = sumV;
                    }
                }
            }
        }
    }

    /// <summary>The probabilities P [B, H, Tq, Tk] (dense), zeros where masked.</summary>
    public static void Probabilities(
        Span<float> probabilities, ReadOnlySpan<float> q, ReadOnlySpan<float> k,
        AttentionShape shape, in AttentionOptions options, ReadOnlySpan<int> keyPaddingMask = default)
    {
        var layout = new Layout(shape, options);
        var (wq, wk) = (Widen(q), Widen(k));
        var (tq, tk) = (shape.QueryLength, shape.KeyLength);
        for (var b = 0; b < shape.Batch; b++)
        {
            for (var h = 0; h < shape.Heads; h++)
            {
                var (p, _) = Softmax(wq, wk, b, h, shape, layout, options, keyPaddingMask);
                var offset = ((b * shape.Heads) + h) * tq * tk;
                for (var i = 0; i < tq; i++)
                {
                    for (var j = 0; j < tk; j++)
                        probabilities[offset + (i * tk) + j] = (float)p[i, j];
                }
            }
        }
    }

    /// <summary>Whether key j is hidden from query i: causal (j &gt; i + offset) or padding.</summary>
    public static bool IsMasked(int batch, int query, int key, AttentionShape shape, in AttentionOptions options, ReadOnlySpan<int> keyPaddingMask) =>
        (options.Causal && key > query + options.CausalOffset)
        || (!keyPaddingMask.IsEmpty && keyPaddingMask[(batch * shape.KeyLength) + key] != 0);

    /// <summary>P [Tq, Tk] and the row log-sum-exp of one (batch, head); fully masked rows are zeros with log-sum-exp −∞.</summary>
    private static (double[,] P, double[] LogSumExp) Softmax(
        ReadOnlySpan<double> q, ReadOnlySpan<double> k, int b, int h,
        AttentionShape shape, Layout layout, in AttentionOptions options, ReadOnlySpan<int> keyPaddingMask)
    {
        var (tq, tk, d) = (shape.QueryLength, shape.KeyLength, shape.HeadDim);
        var scale = (double)options.ScaleFor(shape);
        var p = new double[tq, tk];
        var lse = new double[tq];
        for (var i = 0; i < tq; i++)
        {
            var max = double.NegativeInfinity;
            for (var j = 0; j < tk; j++)
            {
                p[i, j] = IsMasked(b, i, j, shape, options, keyPaddingMask)
                    ? double.NegativeInfinity
                    : scale * Dot(q, layout.Query.Offset(b, i, h), k, layout.Key.Offset(b, j, h), d);
                max = Math.Max(max, p[i, j]);
            }
            var sum = 0.0;
            for (var j = 0; j < tk; j++)
            {
                p[i, j] = double.IsNegativeInfinity(p[i, j]) ? 0.0 : Math.Exp(p[i, j] - max);
                sum += p[i, j];
            }
            for (var j = 0; j < tk; j++)
                p[i, j] = sum > 0 ? p[i, j] / sum : 0.0;
            lse[i] = sum > 0 ? max + Math.Log(sum) : double.NegativeInfinity;
        }
        return (p, lse);
    }

    private static double Dot(ReadOnlySpan<double> a, long aOffset, ReadOnlySpan<double> b, long bOffset, int count)
    {
        var sum = 0.0;
        for (var c = 0; c < count; c++)
            sum += a[(int)(aOffset + c)] * b[(int)(bOffset + c)];
        return sum;
    }

    private static double[] Widen(ReadOnlySpan<float> values)
    {
        var wide = new double[values.Length];
        for (var i = 0; i < values.Length; i++)
            wide[i] = values[i];
        return wide;
    }

    /// <summary>Rounds back the elements a double computation changed from <paramref name="before"/> (others keep their float value, which another overlapping span may have written meanwhile).</summary>
    private static void Narrow(ReadOnlySpan<double> values, ReadOnlySpan<double> before, Span<float> target)
    {
        for (var i = 0; i < values.Length; i++)
        {
            if (!values[i].Equals(before[i]))
                target[i] = (float)values[i];
        }
    }

    /// <summary>The strides of every operand, defaults resolved as <see cref="AttentionOptions"/> documents.</summary>
    private sealed class Layout(AttentionShape shape, AttentionOptions options)
    {
        public AttentionStrides Query { get; } = options.Query ?? AttentionStrides.Dense(shape.QueryLength, shape.Heads, shape.HeadDim);

        public AttentionStrides Key { get; } = options.Key ?? AttentionStrides.Dense(shape.KeyLength, shape.Heads, shape.HeadDim);

        public AttentionStrides Value { get; } = options.Value ?? AttentionStrides.Dense(shape.KeyLength, shape.Heads, shape.HeadDim);

        public AttentionStrides Output { get; } = options.Output ?? AttentionStrides.Dense(shape.QueryLength, shape.Heads, shape.HeadDim);

        public AttentionStrides QueryGradient => options.QueryGradient ?? Query;

        public AttentionStrides KeyGradient => options.KeyGradient ?? Key;

        public AttentionStrides ValueGradient => options.ValueGradient ?? Value;

        public AttentionStrides OutputGradient => options.OutputGradient ?? Output;
    }
}
