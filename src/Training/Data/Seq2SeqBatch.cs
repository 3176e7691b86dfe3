namespace GpuTransformer.Training.Data;

/// <summary>One source/target pair of token ids, without <c>&lt;bos&gt;</c>/<c>&lt;eos&gt;</c>.</summary>
public readonly record struct SequencePair(int[] Source, int[] Target);

/// <summary>
/// A padded encoder–decoder batch (teacher forcing). For a pair (x, y) with |y| = n:
/// source row = x, target-in = [&lt;bos&gt;, y₁ … yₙ], target-out = [y₁ … yₙ, &lt;eos&gt;] (both n + 1
/// long), every row padded with <see cref="PadId"/> to the batch's longest. Masks are 1 for real
/// tokens and 0 for padding: <see cref="SourceMask"/> hides padded keys from attention,
/// <see cref="TargetMask"/> drops padded positions from the loss.
/// </summary>
public sealed class Seq2SeqBatch
{
    private Seq2SeqBatch(int batchSize, int sourceLength, int targetLength, int padId)
    {
        BatchSize = batchSize;
        SourceLength = sourceLength;
        TargetLength = targetLength;
        PadId = padId;
        Source = new int[batchSize * sourceLength];
        TargetInput = new int[batchSize * targetLength];
        TargetOutput = new int[batchSize * targetLength];
        SourceMask = new float[batchSize * sourceLength];
        TargetMask = new float[batchSize * targetLength];
        SourceLengths = new int[batchSize];
        TargetLengths = new int[batchSize];
        Array.Fill(Source, padId);
        Array.Fill(TargetInput, padId);
        Array.Fill(TargetOutput, padId);
    }

    /// <summary>B.</summary>
    public int BatchSize { get; }

    /// <summary>S: longest source in the batch.</summary>
    public int SourceLength { get; }

    /// <summary>T: longest target in the batch, plus one (for &lt;bos&gt;/&lt;eos&gt;).</summary>
    public int TargetLength { get; }

    /// <summary>The id padding is filled with.</summary>
    public int PadId { get; }

    /// <summary>[B, S] source ids.</summary>
    public int[] Source { get; }

    /// <summary>[B, T] decoder inputs: &lt;bos&gt; then the target.</summary>
    public int[] TargetInput { get; }

    /// <summary>[B, T] decoder targets: the target then &lt;eos&gt;.</summary>
    public int[] TargetOutput { get; }

    /// <summary>[B, S] 1 for a real source token, 0 for padding.</summary>
    public float[] SourceMask { get; }

    /// <summary>[B, T] 1 where <see cref="TargetOutput"/> is real, 0 for padding.</summary>
    public float[] TargetMask { get; }

    /// <summary>[B] real source lengths.</summary>
    public int[] SourceLengths { get; }

    /// <summary>[B] real target lengths (target + 1).</summary>
    public int[] TargetLengths { get; }

    /// <summary>Real (unpadded) target tokens: the loss's denominator.</summary>
    public int TargetTokenCount => TargetLengths.Sum();

    /// <summary>
    /// Builds the batch. Sources longer than <paramref name="maxSourceLength"/> are cut to it;
    /// targets are cut so that target-in/out fit <paramref name="maxTargetLength"/> (the last
    /// target-out is then still &lt;eos&gt;).
    /// </summary>
    /// <exception cref="ArgumentException">No pairs, an empty source, or ids equal to the pad id.</exception>
    public static Seq2SeqBatch Create(IReadOnlyList<SequencePair> pairs, int padId, int bosId, int eosId, int maxSourceLength = int.MaxValue, int maxTargetLength = int.MaxValue)
    {
        ArgumentNullException.ThrowIfNull(pairs);
        if (pairs.Count == 0)
            throw new ArgumentException("A batch needs at least one pair.", nameof(pairs));
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxSourceLength);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxTargetLength, 1);
        for (var i = 0; i < pairs.Count; i++)
        {
            var (source, target) = pairs[i];
            if (source is null || target is null || source.Length == 0)
                throw new ArgumentException($"Pair {i} has a missing or empty source or a missing target.", nameof(pairs));
            if (source.Contains(padId) || target.Contains(padId))
                throw new ArgumentException($"Pair {i} contains the pad id {padId}.", nameof(pairs));
        }
        var sourceLength = pairs.Max(p => Math.Min(p.Source.Length, maxSourceLength));
        var targetLength = pairs.Max(p => Math.Min(p.Target.Length + 1, maxTargetLength));
        var batch = new Seq2SeqBatch(pairs.Count, sourceLength, targetLength, padId);
        for (var b = 0; b < pairs.Count; b++)
        {
            var (source, target) = pairs[b];
            var s = Math.Min(source.Length, maxSourceLength);
            source.AsSpan(0, s).CopyTo(batch.Source.AsSpan(b * sourceLength));
            batch.SourceMask.AsSpan(b * sourceLength, s).Fill(1f);
            batch.SourceLengths[b] = s;

            var n = Math.Min(target.Length, maxTargetLength - 1);
            var row = b * targetLength;
            batch.TargetInput[row] = bosId;
            target.AsSpan(0, n).CopyTo(batch.TargetInput.AsSpan(row + 1));
            target.AsSpan(0, n).CopyTo(batch.TargetOutput.AsSpan(row));
            batch.TargetOutput[row + n] = eosId;
            batch.TargetMask.AsSpan(row, n + 1).Fill(1f);
            batch.TargetLengths[b] = n + 1;
        }
        return batch;
    }
}
