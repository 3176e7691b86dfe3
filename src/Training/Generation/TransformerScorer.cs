using GpuTransformer.Layers;

namespace GpuTransformer.Training.Generation;

/// <summary>
/// An <see cref="ISequenceScorer"/> over an encoder–decoder <see cref="Transformer"/>: the
/// sources are encoded once (<see cref="Transformer.StartDecoding"/>, which also projects every
/// decoder layer's cross-attention keys and values once), then each step feeds one target token
/// per row through <see cref="Transformer.DecodeIncremental"/> (one position per row, attending
/// over the cached ones) and returns log-softmax of the logits. Each source fills
/// <c>copies</c> consecutive rows (the beams of beam search). Sources of different lengths are
/// padded with pad_id, which the model masks. Runs the model in evaluation mode while alive.
/// </summary>
public sealed class TransformerScorer : ISequenceScorer, IDisposable
{
    private readonly Transformer model;
    private readonly KeyValueCache cache;
    private readonly EvaluationScope evaluation;

    /// <param name="model">The model.</param>
    /// <param name="sources">Source ids per source (no &lt;bos&gt;/&lt;eos&gt;), each 1 … max_seq_len long.</param>
    /// <param name="copies">Rows per source (beam width; 1 for greedy).</param>
    /// <param name="maxSteps">Most target tokens fed per row (≤ max_seq_len).</param>
    /// <exception cref="ArgumentException">No sources, an empty or too long source, ids outside the source vocabulary, sources of different lengths with no pad_id, or maxSteps beyond max_seq_len.</exception>
    public TransformerScorer(Transformer model, IReadOnlyList<int[]> sources, int copies, int maxSteps)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(sources);
        ArgumentOutOfRangeException.ThrowIfLessThan(copies, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxSteps, 1);
        if (sources.Count == 0)
            throw new ArgumentException("No sources to decode.", nameof(sources));
        var length = sources.Max(s => s?.Length ?? 0);
        if (sources.Any(s => s is null || s.Length == 0))
            throw new ArgumentException("Every source needs at least one token.", nameof(sources));
        var pad = model.Config.PadId;
        if (pad < 0 && sources.Any(s => s.Length != length))
            throw new ArgumentException("Sources of different lengths need a pad_id in the model's config.", nameof(sources));

        var ids = new int[sources.Count * copies * length];
        Array.Fill(ids, pad);
        for (var s = 0; s < sources.Count; s++)
        {
            for (var c = 0; c < copies; c++)
                sources[s].CopyTo(ids.AsSpan(((s * copies) + c) * length));
        }
        this.model = model;
        evaluation = model.EvaluationMode();
        Rows = sources.Count * copies;
        MaxSteps = maxSteps;
        try
        {
            cache = model.StartDecoding(new TokenIds(ids, Rows, length), maxSteps);
        }
        catch
        {
            evaluation.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    public int Rows { get; }

    /// <inheritdoc/>
    public int VocabularySize => model.Config.TargetVocabularySize;

    /// <inheritdoc/>
    public int MaxSteps { get; }

    /// <summary>The cache (its <see cref="KeyValueCache.Length"/> is the target positions fed so far).</summary>
    public KeyValueCache Cache => cache;

    /// <inheritdoc/>
    public void Step(ReadOnlySpan<int> lastTokens, Span<double> logProbabilities)
    {
        if (lastTokens.Length != Rows || logProbabilities.Length != Rows * VocabularySize)
            throw new ArgumentException($"A step takes {Rows} tokens and writes [{Rows}, {VocabularySize}] log-probabilities.", nameof(lastTokens));
        var logits = model.DecodeIncremental(new TokenIds(lastTokens.ToArray(), Rows, 1), cache).ToArray();
        var v = VocabularySize;
        for (var r = 0; r < Rows; r++)
            Sampling.LogSoftmax(logits.AsSpan(r * v, v), logProbabilities.Slice(r * v, v));
    }

    /// <inheritdoc/>
    public void Reorder(ReadOnlySpan<int> parents) => cache.Reorder(parents);

    /// <summary>Frees the cache and restores the model's mode.</summary>
    public void Dispose()
    {
        cache.Dispose();
        evaluation.Dispose();
    }
}
