using GpuTransformer.Layers;

namespace GpuTransformer.Training.Data;

/// <summary>
/// A batch for next-token prediction: <see cref="Inputs"/>[b, t] = stream[sᵦ + t] and
/// <see cref="Targets"/>[b, t] = stream[sᵦ + t + 1], both [B, T] row-major.
/// </summary>
public sealed class LanguageModelBatch
{
    /// <summary>An empty batch of <paramref name="batchSize"/> rows of <paramref name="contextLength"/> tokens.</summary>
    public LanguageModelBatch(int batchSize, int contextLength)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(contextLength);
        BatchSize = batchSize;
        ContextLength = contextLength;
        Inputs = new int[batchSize * contextLength];
        Targets = new int[batchSize * contextLength];
        Starts = new long[batchSize];
    }

    /// <summary>B: rows (the last evaluation batch may have fewer than requested).</summary>
    public int BatchSize { get; }

    /// <summary>T: tokens per row.</summary>
    public int ContextLength { get; }

    /// <summary>[B, T] input ids.</summary>
    public int[] Inputs { get; }

    /// <summary>[B, T] next-token ids.</summary>
    public int[] Targets { get; }

    /// <summary>[B] start offset of each row in the stream.</summary>
    public long[] Starts { get; }

    /// <summary>B·T.</summary>
    public int TokenCount => BatchSize * ContextLength;

    /// <summary>The batch as a model reads it (<see cref="IModel.TrainStep"/>): inputs and targets [B, T], over these arrays.</summary>
    public ModelBatch ToModelBatch() =>
        new(new TokenIds(Inputs, BatchSize, ContextLength), new TokenIds(Targets, BatchSize, ContextLength));

    internal void Fill(ReadOnlySpan<int> stream, int row, long start)
    {
        var t = ContextLength;
        Starts[row] = start;
        stream.Slice(checked((int)start), t).CopyTo(Inputs.AsSpan(row * t, t));
        stream.Slice(checked((int)start) + 1, t).CopyTo(Targets.AsSpan(row * t, t));
    }
}

/// <summary>
/// Where a <see cref="LanguageModelBatcher"/> is: its seed and how many batches it has drawn,
/// plus the shapes it was made with (checked on restore). Save it in a checkpoint; restoring it
/// makes the next batches identical to those an uninterrupted run would have drawn.
/// </summary>
internal readonly record struct BatcherState(ulong Seed, long Step, int BatchSize, int ContextLength, long StreamLength);

/// <summary>
/// Random training windows: batch k (k = 0, 1, …) draws each row's start uniformly from
/// [0, N − T − 1] with a <see cref="SplitMix64"/> seeded by (seed, k) alone. So the state is just
/// (seed, k), batches do not depend on how many were drawn before in this process, and resume is exact.
/// </summary>
public sealed class LanguageModelBatcher
{
    private readonly int[] stream;
    private readonly ulong seed;

    /// <param name="stream">Token stream (e.g. <see cref="TokenizedCorpus.Train"/>); at least T + 1 ids.</param>
    /// <param name="batchSize">B.</param>
    /// <param name="contextLength">T.</param>
    /// <param name="seed">Seed of the window draws.</param>
    public LanguageModelBatcher(int[] stream, int batchSize, int contextLength, ulong seed)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(contextLength);
        if (stream.Length < contextLength + 1)
            throw new ArgumentException($"The token stream has {stream.Length:N0} ids; context length {contextLength} needs at least {contextLength + 1}.", nameof(stream));
        this.stream = stream;
        this.seed = seed;
        BatchSize = batchSize;
        ContextLength = contextLength;
    }

    /// <summary>B, windows per batch.</summary>
    public int BatchSize { get; }

    /// <summary>T, tokens per window.</summary>
    public int ContextLength { get; }

    /// <summary>Batches drawn so far (the index of the next one).</summary>
    public long Step { get; private set; }

    /// <summary>The state to save.</summary>
    internal BatcherState State => new(seed, Step, BatchSize, ContextLength, stream.Length);

    /// <summary>Continues from <paramref name="state"/>.</summary>
    /// <exception cref="ArgumentException">The state belongs to another seed, shape or stream length.</exception>
    internal void Restore(BatcherState state)
    {
        if (state.Seed != seed || state.BatchSize != BatchSize || state.ContextLength != ContextLength || state.StreamLength != stream.Length)
        {
            throw new ArgumentException(
                $"Batcher state (seed {state.Seed}, B {state.BatchSize}, T {state.ContextLength}, stream {state.StreamLength:N0}) does not match this batcher " +
                $"(seed {seed}, B {BatchSize}, T {ContextLength}, stream {stream.Length:N0}).", nameof(state));
        }
        ArgumentOutOfRangeException.ThrowIfNegative(state.Step);
        Step = state.Step;
    }

    /// <summary>Draws the next batch into a new <see cref="LanguageModelBatch"/>.</summary>
    public LanguageModelBatch Next()
    {
        var batch = new LanguageModelBatch(BatchSize, ContextLength);
        NextInto(batch);
        return batch;
    }

    /// <summary>Draws the next batch into <paramref name="batch"/> (reuse it to avoid allocation).</summary>
    public void NextInto(LanguageModelBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        if (batch.BatchSize != BatchSize || batch.ContextLength != ContextLength)
            throw new ArgumentException($"Batch is [{batch.BatchSize}, {batch.ContextLength}], the batcher draws [{BatchSize}, {ContextLength}].", nameof(batch));
        var rng = SplitMix64.ForIndex(seed, Step);
        var starts = stream.Length - ContextLength;
        for (var row = 0; row < BatchSize; row++)
            batch.Fill(stream, row, rng.NextBelow(starts));
        Step++;
    }
}

/// <summary>Evaluation batches: a sequential pass over a stream.</summary>
internal static class EvaluationBatches
{
    /// <summary>
    /// Non-overlapping windows at offsets 0, T, 2T, … while a full window and its targets fit
    /// (offset + T + 1 ≤ N), B rows per batch, the last batch possibly shorter. Targets covered:
    /// <see cref="WindowCount"/>·T; the tail of fewer than T targets is left out.
    /// </summary>
    public static IEnumerable<LanguageModelBatch> Sequential(int[] stream, int batchSize, int contextLength, int? maxBatches = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(contextLength);
        return Iterate(stream, batchSize, contextLength, maxBatches ?? int.MaxValue);
    }

    /// <summary>Full windows of length T in a stream of N ids: ⌊(N − 1) / T⌋.</summary>
    public static long WindowCount(long streamLength, int contextLength) =>
        streamLength < 2 ? 0 : (streamLength - 1) / contextLength;

    private static IEnumerable<LanguageModelBatch> Iterate(int[] stream, int batchSize, int contextLength, int maxBatches)
    {
        var windows = WindowCount(stream.Length, contextLength);
        var produced = 0;
        for (long first = 0; first < windows && produced < maxBatches; first += batchSize, produced++)
        {
            var rows = (int)Math.Min(batchSize, windows - first);
            var batch = new LanguageModelBatch(rows, contextLength);
            for (var row = 0; row < rows; row++)
                batch.Fill(stream, row, (first + row) * contextLength);
            yield return batch;
        }
    }
}
