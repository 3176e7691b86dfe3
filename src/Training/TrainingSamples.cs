using GpuTransformer.Layers;
using GpuTransformer.Training.Data;
using GpuTransformer.Training.Tokenizers;

namespace GpuTransformer.Training;

/// <summary>A text sample: the prompt's ids followed by the generated ones.</summary>
/// <param name="Prompt">The prompt text.</param>
/// <param name="Completion">The generated text (decoded from the new ids only).</param>
/// <param name="Ids">Prompt ids then generated ids.</param>
public sealed record TextSample(string Prompt, string Completion, int[] Ids);

/// <summary>
/// What <c>train</c> shows at the end: text continuations of a prompt and the attention weights of a
/// sequence. <see cref="Generate"/> is a small greedy/temperature loop over
/// <see cref="LanguageModel.ForwardIncremental"/>; the full samplers (top-k/p, sliding window, beam
/// search) live in <c>GpuTransformer.Training.Generation</c> and can replace it one for one.
/// </summary>
public static class TrainingSamples
{
    /// <summary>
    /// Continues <paramref name="prompt"/> by up to <paramref name="maxTokens"/> tokens (fewer when
    /// max_seq_len is reached or &lt;eos&gt; is drawn): the most likely token when
    /// <paramref name="temperature"/> is 0, else a draw from softmax(logits / temperature) seeded by
    /// <paramref name="seed"/>. The model runs in evaluation mode; its mode is restored after.
    /// </summary>
    public static TextSample Generate(LanguageModel model, ITokenizer tokenizer, string prompt, int maxTokens, double temperature, ulong seed)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(prompt);
        ArgumentOutOfRangeException.ThrowIfNegative(temperature);
        var maxLength = model.Config.MaxSequenceLength;
        var ids = tokenizer.Encode(prompt).ToList();
        if (ids.Count == 0)
            ids.Add(tokenizer.Specials.Eos); // an empty prompt starts a new document
        if (ids.Count >= maxLength)
            ids.RemoveRange(0, ids.Count - (maxLength - 1));
        var promptLength = ids.Count;
        var total = Math.Min(maxLength, promptLength + maxTokens);
        var random = new SplitMix64(seed);
        var vocabulary = model.Config.VocabularySize;

        using (model.EvaluationMode())
        {
            using var cache = model.CreateCache(1, total);
            var logits = model.ForwardIncremental(new TokenIds(ids.ToArray(), 1, ids.Count), cache);
            while (ids.Count < total)
            {
                var all = logits.ToArray();
                var next = Pick(all.AsSpan(all.Length - vocabulary), temperature, ref random);
                if (next == tokenizer.Specials.Eos)
                    break;
                ids.Add(next);
                if (ids.Count < total)
                    logits = model.ForwardIncremental(new TokenIds(new[] { next }, 1, 1), cache);
            }
        }
        var result = ids.ToArray();
        return new TextSample(prompt, tokenizer.Decode(result.AsSpan(promptLength)), result);
    }

    /// <summary>
    /// The causal self-attention weights of every layer for one sequence: one [H, T, T] row-major
    /// array per layer (row q = the weights query q gives each key; zero above the diagonal).
    /// Runs a forward in evaluation mode.
    /// </summary>
    public static IReadOnlyList<float[]> AttentionWeights(LanguageModel model, ReadOnlySpan<int> ids)
    {
        ArgumentNullException.ThrowIfNull(model);
        using (model.EvaluationMode())
        {
            model.Forward(new TokenIds(ids.ToArray(), 1, ids.Length));
            return model.Layers.Select(layer => layer.SelfAttention.LastProbabilities()).ToList();
        }
    }

    private static int Pick(ReadOnlySpan<float> logits, double temperature, ref SplitMix64 random)
    {
        var best = 0;
        for (var i = 1; i < logits.Length; i++)
        {
            if (logits[i] > logits[best])
                best = i;
        }
        if (temperature == 0)
            return best;
        var weights = new double[logits.Length];
        double sum = 0;
        for (var i = 0; i < logits.Length; i++)
            sum += weights[i] = Math.Exp((logits[i] - logits[best]) / temperature);
        var u = (random.NextUInt64() >> 11) * (1.0 / (1UL << 53)) * sum;
        for (var i = 0; i < weights.Length; i++)
        {
            u -= weights[i];
            if (u < 0)
                return i;
        }
        return best;
    }
}
