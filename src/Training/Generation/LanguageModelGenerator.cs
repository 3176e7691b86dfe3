using GpuTransformer.Kernels;
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Kernels.Profiling;
using GpuTransformer.Layers;
using ILGPU.Runtime;
using GpuTransformer.Training.Tokenizers;

namespace GpuTransformer.Training.Generation;

/// <summary>What happens when the text outgrows the model's max_seq_len.</summary>
public enum ContextOverflow
{
    /// <summary>
    /// Sliding window: when the next token no longer fits, the context is cut to its last
    /// ⌈max_seq_len / 2⌉ tokens, the cache is emptied and they are run again at positions 0…
    /// (one prefill per max_seq_len / 2 new tokens, so still O(1) positions per token on average).
    /// A prompt longer than max_seq_len is cut the same way before the first step.
    /// </summary>
    SlidingWindow,

    /// <summary>Refuse (ArgumentException, before anything runs) when prompt + max tokens − 1 positions do not fit.</summary>
    Refuse,
}

/// <summary>Why generation stopped.</summary>
public enum StopReason
{
    /// <summary>The model emitted &lt;eos&gt; (kept out of the text).</summary>
    EndOfSequence,

    /// <summary><see cref="GenerationOptions.MaxTokens"/> tokens were generated.</summary>
    MaxTokens,
}

/// <summary>Options of <see cref="LanguageModelGenerator"/>.</summary>
public sealed record GenerationOptions
{
    /// <summary>Most new tokens (≥ 1).</summary>
    public int MaxTokens { get; init; } = 200;

    /// <summary>How each token is chosen.</summary>
    public SamplingOptions Sampling { get; init; } = new();

    /// <summary>Stop when the model emits &lt;eos&gt;.</summary>
    public bool StopAtEos { get; init; } = true;

    /// <summary>Text longer than max_seq_len: sliding window (default) or refuse.</summary>
    public ContextOverflow Overflow { get; init; } = ContextOverflow.SlidingWindow;

    /// <summary>
    /// Begin the context with &lt;eos&gt;, the separator the corpus streams put before every
    /// document (<see cref="Data.TokenizedCorpus"/>), so the prompt reads as the start of a
    /// document and an empty prompt is allowed. Off: the prompt alone (it must not be empty).
    /// </summary>
    public bool StartWithSeparator { get; init; } = true;

    /// <summary>
    /// Use the key/value cache (default): the context is run once, then each token costs one
    /// position. Off: every step runs the whole (windowed) context again — the reference the
    /// cached path is tested against.
    /// </summary>
    public bool UseCache { get; init; } = true;

    /// <summary>Keep each step's logits row in <see cref="GenerationResult.StepLogits"/> (tests, inspection).</summary>
    public bool RecordLogits { get; init; }

    /// <summary>Returns this after checking every field.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Max tokens &lt; 1, or bad sampling options.</exception>
    public GenerationOptions Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxTokens, 1, nameof(MaxTokens));
        ArgumentNullException.ThrowIfNull(Sampling, nameof(Sampling));
        Sampling.Validate();
        return this;
    }
}

/// <summary>
/// One call of the model during generation: <paramref name="NewPositions"/> positions were run
/// (projected, attended from, fed through every layer) against <paramref name="KeyPositions"/>
/// keys. With the cache a decoding step runs one position; without it, the whole context.
/// </summary>
public readonly record struct GenerationStep(int NewPositions, int KeyPositions);

/// <summary>The outcome of <see cref="LanguageModelGenerator"/>.</summary>
/// <param name="Text">The generated continuation (without the prompt, without &lt;eos&gt;).</param>
/// <param name="ContextIds">The ids the model was conditioned on (separator + prompt).</param>
/// <param name="GeneratedIds">The new ids, &lt;eos&gt; included when it ended the text.</param>
/// <param name="StopReason">Why it stopped.</param>
/// <param name="Steps">Every model call, in order (the first is the prefill).</param>
/// <param name="StepLogits">The logits each token was drawn from (only with <see cref="GenerationOptions.RecordLogits"/>).</param>
public sealed record GenerationResult(
    string Text,
    int[] ContextIds,
    int[] GeneratedIds,
    StopReason StopReason,
    IReadOnlyList<GenerationStep> Steps,
    IReadOnlyList<float[]>? StepLogits);

/// <summary>
/// Text generation with a decoder-only <see cref="LanguageModel"/>: prefill the context once
/// through <see cref="LanguageModel.ForwardIncremental"/> (filling the key/value cache), then
/// feed each new token alone, so a step projects one position and attends over the cached keys
/// instead of recomputing the prefix. Tokens come from a <see cref="TokenSampler"/> (greedy,
/// temperature, top-k, top-p, seeded); &lt;pad&gt; and &lt;bos&gt; are never emitted. The model is run
/// in evaluation mode (no dropout) and left in the mode it was in.
/// </summary>
public static class LanguageModelGenerator
{
    /// <summary>
    /// The continuation of <paramref name="prompt"/>: encode it with <paramref name="tokenizer"/>,
    /// generate, decode. This is the one call a trainer needs for its samples.
    /// </summary>
    /// <exception cref="ArgumentException">The tokenizer's vocabulary is larger than the model's, the prompt is empty without a separator, or it does not fit under <see cref="ContextOverflow.Refuse"/>.</exception>
    public static GenerationResult Generate(LanguageModel model, ITokenizer tokenizer, string prompt, GenerationOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(prompt);
        options = (options ?? new GenerationOptions()).Validate();
        if (tokenizer.VocabularySize > model.Config.VocabularySize)
            throw new ArgumentException($"The tokenizer has {tokenizer.VocabularySize} ids but the model's vocabulary is {model.Config.VocabularySize}: they do not belong together.", nameof(tokenizer));
        var specials = tokenizer.Specials;
        var context = options.StartWithSeparator
            ? [specials.Eos, .. tokenizer.Encode(prompt)]
            : tokenizer.Encode(prompt);
        var (ids, stop, steps, logits) = GenerateIds(model, context, options, specials.Eos, [specials.Pad, specials.Bos]);
        var text = tokenizer.Decode(stop == StopReason.EndOfSequence ? ids.AsSpan(0, ids.Length - 1) : ids);
        return new GenerationResult(text, context, ids, stop, steps, logits);
    }

    /// <summary>
    /// Generates ids after <paramref name="context"/>. <paramref name="eosId"/> (when given and
    /// <see cref="GenerationOptions.StopAtEos"/>) ends the text; <paramref name="banned"/> ids are never chosen.
    /// </summary>
    /// <exception cref="ArgumentException">An empty context, ids outside the vocabulary (named with position), or a context that does not fit under <see cref="ContextOverflow.Refuse"/>.</exception>
    public static (int[] Ids, StopReason Stop, IReadOnlyList<GenerationStep> Steps, IReadOnlyList<float[]>? Logits) GenerateIds(
        LanguageModel model, ReadOnlySpan<int> context, GenerationOptions options, int? eosId = null, IEnumerable<int>? banned = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (context.IsEmpty)
            throw new ArgumentException("Generation needs at least one context token (an empty prompt needs StartWithSeparator).", nameof(context));
        var maxLength = model.Config.MaxSequenceLength;
        new TokenIds(context.ToArray(), 1, context.Length).RequireInVocabulary(model.Config.VocabularySize, "prompt");
        if (options.Overflow == ContextOverflow.Refuse && context.Length + options.MaxTokens - 1 > maxLength)
        {
            throw new ArgumentException(
                $"The context ({context.Length} tokens) and {options.MaxTokens} new tokens need {context.Length + options.MaxTokens - 1} positions " +
                $"(the last token is never fed back), more than max_seq_len {maxLength}. Shorten the prompt, generate fewer tokens or use the sliding window.",
                nameof(context));
        }

        var sampler = new TokenSampler(options.Sampling, banned);
        var sequence = new List<int>(context.Length + options.MaxTokens);
        sequence.AddRange(context.ToArray());
        var generated = new List<int>(options.MaxTokens);
        var steps = new List<GenerationStep>();
        var recorded = options.RecordLogits ? new List<float[]>() : null;
        var keep = WindowKept(maxLength);
        using (model.EvaluationMode())
        {
            using var cache = options.UseCache ? model.CreateCache(1, maxLength) : null;
            // Greedy without recorded logits: the argmax runs on the device and 4 bytes come back per token.
            using var deviceGreedy = options.Sampling.IsGreedy && !options.RecordLogits
                ? new DeviceGreedy(model.Device, model.Config.VocabularySize, banned)
                : null;
            // The window: sequence[start…] is what the model sees (all of it, until it overflows).
            var start = DroppedContextTokens(sequence.Count, maxLength);
            var logits = Run(model, cache, sequence, sequence.Count - start, steps);
            var stop = StopReason.MaxTokens;
            while (true)
            {
                int token;
                if (deviceGreedy is not null)
                {
                    token = deviceGreedy.Next(logits);
                }
                else
                {
                    var row = LastRow(logits);
                    recorded?.Add(row);
                    token = sampler.Next(row);
                }
                generated.Add(token);
                sequence.Add(token);
                if (options.StopAtEos && token == eosId)
                {
                    stop = StopReason.EndOfSequence;
                    break;
                }
                if (generated.Count == options.MaxTokens)
                    break;
                if (sequence.Count - start > maxLength)
                {
                    // Sliding window: keep the last ⌈L/2⌉ tokens and run them again from position 0.
                    start = sequence.Count - keep;
                    cache?.Reset();
                    logits = Run(model, cache, sequence, keep, steps);
                }
                else
                {
                    logits = Run(model, cache, sequence, cache is null ? sequence.Count - start : 1, steps);
                }
            }
            return ([.. generated], stop, steps, recorded);
        }
    }

    /// <summary>
    /// Context tokens that generation under <see cref="ContextOverflow.SlidingWindow"/> drops before
    /// its first step: a context longer than <paramref name="maxSequenceLength"/> keeps only its last
    /// ⌈max_seq_len / 2⌉ tokens (as when the window slides later); 0 when it fits.
    /// </summary>
    public static int DroppedContextTokens(int contextLength, int maxSequenceLength) =>
        contextLength > maxSequenceLength ? contextLength - WindowKept(maxSequenceLength) : 0;

    /// <summary>Tokens the sliding window keeps when it slides: ⌈max_seq_len / 2⌉.</summary>
    private static int WindowKept(int maxSequenceLength) => (maxSequenceLength + 1) / 2;

    /// <summary>
    /// Runs the last <paramref name="count"/> tokens of <paramref name="sequence"/> and returns the
    /// logits [1, count, V] (on the device). With a cache they are appended to it (the cache holds
    /// the window's earlier tokens); without, they must be the whole window.
    /// </summary>
    private static Tensor<float> Run(LanguageModel model, KeyValueCache? cache, List<int> sequence, int count, List<GenerationStep> steps)
    {
        var ids = new TokenIds(sequence.GetRange(sequence.Count - count, count).ToArray(), 1, count);
        if (cache is null)
        {
            steps.Add(new GenerationStep(count, count));
            return model.Forward(ids);
        }
        var logits = model.ForwardIncremental(ids, cache);
        steps.Add(new GenerationStep(count, cache.Length));
        return logits;
    }

    /// <summary>Downloads only the last row of logits [B = 1, T, V] (a prefill's T·V values are not needed).</summary>
    internal static float[] LastRow(Tensor<float> logits)
    {
        var v = logits.Dim(-1);
        var rows = logits.Length / v;
        var row = new float[v];
        logits.Device.Synchronize();
        using var profile = logits.Device.ProfileHost(ProfileRowKind.ReadBack, "last logits row", sizeof(float) * (double)v);
        logits.View.SubView((long)(rows - 1) * v, v).CopyToCPU(logits.Device.Stream, row);
        logits.Device.Synchronize();
        return row;
    }

    /// <summary>
    /// The greedy choice made on the device: <see cref="ReductionKernels.RowArgmax"/> over the last
    /// row of logits with the banned ids excluded, then only the id is read back. It picks what
    /// <see cref="TokenSampler"/> picks for greedy options (banned ids as −∞, ties to the lowest id).
    /// </summary>
    private sealed class DeviceGreedy : IDisposable
    {
        private readonly ComputeDevice device;
        private readonly ReductionKernels reduction;
        private readonly Tensor<int> id;
        private readonly Tensor<int>? excluded;
        private readonly int[] hostId = new int[1];

        public DeviceGreedy(ComputeDevice device, int vocabularySize, IEnumerable<int>? banned)
        {
            this.device = device;
            reduction = device.Kernels<ReductionKernels>();
            id = new Tensor<int>(device, 1);
            int[] ids = [.. (banned ?? []).Where(b => (uint)b < (uint)vocabularySize).Distinct()];
            if (ids.Length > 0)
            {
                excluded = new Tensor<int>(device, ids.Length);
                excluded.CopyFrom(ids);
            }
        }

        /// <summary>The argmax of the last row of <paramref name="logits"/> [B = 1, T, V].</summary>
        /// <exception cref="ArgumentException">The row holds a NaN (as the host's argmax says).</exception>
        public int Next(Tensor<float> logits)
        {
            var v = logits.Dim(-1);
            var rows = logits.Length / v;
            reduction.RowArgmax(id.View, logits.View.SubView((long)(rows - 1) * v, v), 1, v, excluded?.View ?? default);
            using (device.ProfileHost(ProfileRowKind.ReadBack, "greedy id", sizeof(int)))
            {
                id.View.SubView(0, 1).CopyToCPU(device.Stream, hostId);
                device.Synchronize();
            }
            return hostId[0] >= 0 ? hostId[0] : throw new ArgumentException("The last logits row holds a NaN.", nameof(logits));
        }

        public void Dispose()
        {
            id.Dispose();
            excluded?.Dispose();
        }
    }
}
