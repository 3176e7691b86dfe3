using GpuTransformer.Kernels;
using GpuTransformer.Kernels.Profiling;
using GpuTransformer.Layers;
using ILGPU;
using ILGPU.Runtime;

namespace GpuTransformer.Training.Generation;

/// <summary>
/// An <see cref="ISequenceScorer"/> over an encoder–decoder <see cref="Transformer"/>: the
/// sources are encoded once (<see cref="Transformer.StartDecoding"/>, which also projects every
/// decoder layer's cross-attention keys and values once), then each step feeds one target token
/// per row through <see cref="Transformer.DecodeIncremental"/> (one position per row, attending
/// over the cached ones) and returns log-softmax of the logits. Each source fills
/// <c>copies</c> consecutive rows (the beams of beam search). Sources of different lengths are
/// padded with pad_id, which the model masks. Runs the model in evaluation mode while alive.
/// Greedy steps (<see cref="StepGreedy"/>) choose on the device and read back an id and a
/// log-probability per row.
/// </summary>
public sealed class TransformerScorer : IGreedySequenceScorer, IDisposable
{
    private readonly Transformer model;
    private readonly KeyValueCache cache;
    private readonly EvaluationScope evaluation;
    private readonly ReductionKernels reduction;
    private readonly CrossEntropyKernels crossEntropy;
    private readonly Tensor<int> choices;               // greedy: [R] ids
    private readonly Tensor<float> losses;              // greedy: [R] −log p of the ids
    private readonly int[] hostChoices;
    private readonly float[] hostLosses;
    private Tensor<int>? excluded;                      // greedy: the banned ids in the vocabulary, distinct
    private int[] bannedIds = [];                       // … as last given

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
        reduction = model.Device.Kernels<ReductionKernels>();
        crossEntropy = model.Device.Kernels<CrossEntropyKernels>();
        choices = new Tensor<int>(model.Device, Rows);
        losses = new Tensor<float>(model.Device, Rows);
        (hostChoices, hostLosses) = (new int[Rows], new float[Rows]);
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

    /// <summary>
    /// <see cref="IGreedySequenceScorer.StepGreedy"/> on the device: <see cref="ReductionKernels.RowArgmax"/>
    /// over the logits [R, V] with the banned ids excluded, then the cross-entropy of each row at its
    /// choice (<see cref="CrossEntropyKernels"/>: −log p, float32); 8 bytes per row come back.
    /// </summary>
    /// <inheritdoc/>
    public void StepGreedy(ReadOnlySpan<int> lastTokens, ReadOnlySpan<int> banned, Span<int> next, Span<double> logProbabilities)
    {
        if (lastTokens.Length != Rows || next.Length != Rows || logProbabilities.Length != Rows)
            throw new ArgumentException($"A greedy step takes {Rows} tokens and writes {Rows} ids and {Rows} log-probabilities.", nameof(lastTokens));
        var logits = model.DecodeIncremental(new TokenIds(lastTokens.ToArray(), Rows, 1), cache);    // [R, 1, V]
        var (v, device) = (VocabularySize, model.Device);
        reduction.RowArgmax(choices.View, logits.View, Rows, v, Excluded(banned));
        crossEntropy.Forward(losses.View, logits.View, choices.View, Rows, v);
        using (device.ProfileHost(ProfileRowKind.ReadBack, "greedy ids and log p", 2.0 * sizeof(int) * Rows))
        {
            choices.View.CopyToCPU(device.Stream, hostChoices);
            losses.View.CopyToCPU(device.Stream, hostLosses);
            device.Synchronize();
        }
        for (var r = 0; r < Rows; r++)
        {
            if (hostChoices[r] < 0)
                throw new ArgumentException($"The logits of row {r} hold a NaN.", nameof(lastTokens));
            next[r] = hostChoices[r];
            logProbabilities[r] = -(double)hostLosses[r];
        }
    }

    /// <summary>The banned ids inside the vocabulary on the device (uploaded again only when they change); empty: none.</summary>
    private ArrayView<int> Excluded(ReadOnlySpan<int> banned)
    {
        if (!banned.SequenceEqual(bannedIds))
        {
            bannedIds = banned.ToArray();
            excluded?.Dispose();
            excluded = null;
            int[] ids = [.. bannedIds.Where(b => (uint)b < (uint)VocabularySize).Distinct()];
            if (ids.Length > 0)
            {
                excluded = new Tensor<int>(model.Device, ids.Length);
                excluded.CopyFrom(ids);
            }
        }
        return excluded?.View ?? default;
    }

    /// <inheritdoc/>
    public void Reorder(ReadOnlySpan<int> parents) => cache.Reorder(parents);

    /// <summary>Frees the cache and the greedy buffers and restores the model's mode.</summary>
    public void Dispose()
    {
        cache.Dispose();
        choices.Dispose();
        losses.Dispose();
        excluded?.Dispose();
        evaluation.Dispose();
    }
}
