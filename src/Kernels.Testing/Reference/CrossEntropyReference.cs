namespace GpuTransformer.Kernels.Reference;

/// <summary>Plain C# twin of <see cref="CrossEntropyKernels"/>, computing in double.</summary>
public static class CrossEntropyReference
{
    /// <summary>Per-row loss and log-sum-exp over logits [rows, vocabulary]: 0 for ignored rows, NaN for a target ≥ V.</summary>
    public static (float[] Losses, float[] LogSumExp) Forward(
        ReadOnlySpan<float> logits, ReadOnlySpan<int> targets, int rows, int vocabulary, CrossEntropyOptions? options = null)
    {
        var (losses, logSumExp) = Forward(Precision.ToDouble(logits), targets, rows, vocabulary, options);
        return (Precision.ToFloat(losses), Precision.ToFloat(logSumExp));
    }

    /// <summary>The forward in double throughout (for finite differences).</summary>
    public static (double[] Losses, double[] LogSumExp) Forward(
        ReadOnlySpan<double> logits, ReadOnlySpan<int> targets, int rows, int vocabulary, CrossEntropyOptions? options = null)
    {
        options ??= CrossEntropyOptions.Default;
        var losses = new double[rows];
        var logSumExp = new double[rows];
        for (var r = 0; r < rows; r++)
        {
            var target = targets[r];
            if (IsIgnored(target, options))
                continue;
            if (target >= vocabulary)
            {
                losses[r] = logSumExp[r] = double.NaN;
                continue;
            }
            var row = logits.Slice(r * vocabulary, vocabulary);
            var lse = LogSumExp(row);
            // −Σ_j q_j·log p_j with q = (1 − ε)·onehot + ε/V and log p_j = z_j − lse.
            var loss = 0.0;
            for (var j = 0; j < vocabulary; j++)
            {
                var q = options.LabelSmoothing / vocabulary + (j == target ? 1 - options.LabelSmoothing : 0);
                loss -= q * (row[j] - lse);
            }
            losses[r] = loss;
            logSumExp[r] = lse;
        }
        return (losses, logSumExp);
    }

    /// <summary>dlogits = (softmax(z) − (1 − ε)·onehot − ε/V)·gradScale per counted row, 0 for ignored rows, NaN for a target ≥ V.</summary>
    public static float[] Backward(
        ReadOnlySpan<float> logits, ReadOnlySpan<int> targets, int rows, int vocabulary, float gradScale, CrossEntropyOptions? options = null) =>
        Precision.ToFloat(Backward(Precision.ToDouble(logits), targets, rows, vocabulary, gradScale, options));

    /// <summary>The backward in double throughout.</summary>
    public static double[] Backward(
        ReadOnlySpan<double> logits, ReadOnlySpan<int> targets, int rows, int vocabulary, double gradScale, CrossEntropyOptions? options = null)
    {
        options ??= CrossEntropyOptions.Default;
        var dLogits = new double[rows * vocabulary];
        for (var r = 0; r < rows; r++)
        {
            var target = targets[r];
            if (IsIgnored(target, options))
                continue;
            if (target >= vocabulary)
            {
                dLogits.AsSpan(r * vocabulary, vocabulary).Fill(double.NaN);
                continue;
            }
            var row = logits.Slice(r * vocabulary, vocabulary);
            var lse = LogSumExp(row);
            for (var j = 0; j < vocabulary; j++)
            {
                var q = options.LabelSmoothing / vocabulary + (j == target ? 1 - options.LabelSmoothing : 0);
                dLogits[r * vocabulary + j] = (Math.Exp(row[j] - lse) - q) * gradScale;
            }
        }
        return dLogits;
    }

    /// <summary>Mean loss over the rows that are not ignored (NaN when all are).</summary>
    public static float Mean(ReadOnlySpan<float> losses, ReadOnlySpan<int> targets, CrossEntropyOptions? options = null)
    {
        options ??= CrossEntropyOptions.Default;
        var sum = 0.0;
        var count = 0;
        for (var r = 0; r < losses.Length; r++)
        {
            if (IsIgnored(targets[r], options))
                continue;
            sum += losses[r];
            count++;
        }
        return (float)(sum / count);
    }

    /// <summary>Whether a row with <paramref name="target"/> is ignored: negative, or the ignore index.</summary>
    public static bool IsIgnored(int target, CrossEntropyOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return target < 0 || target == options.IgnoreIndex;
    }

    private static double LogSumExp(ReadOnlySpan<double> row)
    {
        var max = double.NegativeInfinity;
        foreach (var z in row)
            max = Math.Max(max, z);
        var sum = 0.0;
        foreach (var z in row)
            sum += Math.Exp(z - max);
        return max + Math.Log(sum);
    }
}
