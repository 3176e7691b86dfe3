using System.Globalization;
using GpuTransformer.Training.Data;

namespace GpuTransformer.Training.Generation;

/// <summary>
/// How the next token is chosen from the model's logits. Greedy takes the argmax; otherwise the
/// logits are divided by <see cref="Temperature"/>, turned into probabilities, cut to the
/// <see cref="TopK"/> most likely tokens, then to the smallest set whose mass reaches
/// <see cref="TopP"/> (the nucleus), renormalised, and a token is drawn from a SplitMix64 stream
/// seeded by <see cref="Seed"/> (the same seed gives the same tokens).
/// </summary>
public sealed record SamplingOptions
{
    /// <summary>Always take the most likely token (lowest id among ties). Temperature 0 means the same.</summary>
    public bool Greedy { get; init; }

    /// <summary>Logits are divided by it: &lt; 1 sharpens, &gt; 1 flattens; 0 is greedy. Must be finite and ≥ 0.</summary>
    public double Temperature { get; init; } = 1.0;

    /// <summary>Keep only the k most likely tokens; 0 keeps all.</summary>
    public int TopK { get; init; }

    /// <summary>Keep the smallest set of most likely tokens whose probability reaches p, in (0, 1]; 1 keeps all.</summary>
    public double TopP { get; init; } = 1.0;

    /// <summary>Seed of the sampling stream.</summary>
    public ulong Seed { get; init; }

    /// <summary>Greedy, either explicitly or through temperature 0.</summary>
    public bool IsGreedy => Greedy || Temperature == 0;

    /// <summary>Returns this after checking every field.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Temperature negative or not finite, top-k negative, or top-p outside (0, 1].</exception>
    public SamplingOptions Validate()
    {
        if (!double.IsFinite(Temperature) || Temperature < 0)
            throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature, "Temperature must be a finite number ≥ 0 (0 means greedy).");
        if (TopK < 0)
            throw new ArgumentOutOfRangeException(nameof(TopK), TopK, "Top-k must be ≥ 0 (0 keeps every token).");
        if (!(TopP > 0 && TopP <= 1))
            throw new ArgumentOutOfRangeException(nameof(TopP), TopP, "Top-p must be in (0, 1] (1 keeps every token).");
        return this;
    }

    /// <inheritdoc/>
    public override string ToString() => IsGreedy
        ? "greedy"
        : string.Create(CultureInfo.InvariantCulture, $"temperature {Temperature}, top-k {(TopK == 0 ? "off" : TopK)}, top-p {TopP}, seed {Seed}");
}

/// <summary>
/// The host-side pieces of sampling, as pure functions on one row of logits: softmax with a
/// temperature (in double), top-k and top-p (nucleus) filtering, and drawing by inverse CDF.
/// Ties are broken towards the lower id everywhere, so results do not depend on sort stability.
/// </summary>
internal static class Sampling
{
    /// <summary>The id of the largest logit (the lowest such id on ties); −∞ logits are never chosen unless all are.</summary>
    /// <exception cref="ArgumentException">No logits, or a NaN.</exception>
    public static int Argmax(ReadOnlySpan<float> logits)
    {
        RequireLogits(logits);
        var best = 0;
        for (var i = 1; i < logits.Length; i++)
        {
            if (logits[i] > logits[best])
                best = i;
        }
        return best;
    }

    /// <summary>
    /// p_i = exp(l_i / T) / Σ_j exp(l_j / T), computed in double after subtracting the maximum.
    /// Tokens with logit −∞ get 0. Temperature 0 is the limit: all mass on the argmax.
    /// </summary>
    /// <exception cref="ArgumentException">No logits, a NaN, every logit −∞, or a negative or non-finite temperature.</exception>
    public static double[] Softmax(ReadOnlySpan<float> logits, double temperature = 1.0)
    {
        RequireLogits(logits);
        if (!double.IsFinite(temperature) || temperature < 0)
            throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "Temperature must be a finite number ≥ 0.");
        var probabilities = new double[logits.Length];
        var argmax = Argmax(logits);
        var max = (double)logits[argmax];
        if (double.IsNegativeInfinity(max))
            throw new ArgumentException("Every logit is −∞: no token can be chosen.", nameof(logits));
        if (temperature == 0)
        {
            probabilities[argmax] = 1;
            return probabilities;
        }
        var sum = 0.0;
        for (var i = 0; i < logits.Length; i++)
        {
            probabilities[i] = Math.Exp((logits[i] - max) / temperature);
            sum += probabilities[i];
        }
        for (var i = 0; i < probabilities.Length; i++)
            probabilities[i] /= sum;
        return probabilities;
    }

    /// <summary>
    /// Zeroes every probability but the <paramref name="k"/> largest (ties: lower ids first) and
    /// renormalises in place. k = 0 or k ≥ the vocabulary keeps all.
    /// </summary>
    public static void KeepTopK(Span<double> probabilities, int k)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        if (k == 0 || k >= probabilities.Length)
            return;
        var order = Descending(probabilities);
        for (var rank = k; rank < order.Length; rank++)
            probabilities[order[rank]] = 0;
        Normalize(probabilities);
    }

    /// <summary>
    /// Nucleus filtering: keeps the smallest set of most likely tokens whose total probability is
    /// ≥ <paramref name="p"/> (always at least one), zeroes the rest and renormalises in place.
    /// A small tolerance (1e-12) keeps rounding from adding one more token when the mass is exactly p.
    /// </summary>
    public static void KeepTopP(Span<double> probabilities, double p)
    {
        if (!(p > 0 && p <= 1))
            throw new ArgumentOutOfRangeException(nameof(p), p, "Top-p must be in (0, 1].");
        if (p >= 1)
            return;
        var order = Descending(probabilities);
        var total = 0.0;
        foreach (var value in probabilities)
            total += value;
        var mass = 0.0;
        var kept = 0;
        while (kept < order.Length && mass < (p * total) - 1e-12)
            mass += probabilities[order[kept++]];
        for (var rank = Math.Max(kept, 1); rank < order.Length; rank++)
            probabilities[order[rank]] = 0;
        Normalize(probabilities);
    }

    /// <summary>
    /// The distribution a sampling step draws from: softmax(logits / T), then top-k, then top-p
    /// (the order of Hugging Face's samplers). Greedy options give a one-hot on the argmax.
    /// </summary>
    public static double[] Distribution(ReadOnlySpan<float> logits, SamplingOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var probabilities = Softmax(logits, options.IsGreedy ? 0 : options.Temperature);
        KeepTopK(probabilities, options.TopK);
        KeepTopP(probabilities, options.TopP);
        return probabilities;
    }

    /// <summary>
    /// Inverse CDF: the first id whose cumulative probability exceeds <paramref name="u"/>·Σp,
    /// for u in [0, 1). Ids with probability 0 are never returned.
    /// </summary>
    public static int Draw(ReadOnlySpan<double> probabilities, double u)
    {
        if (!(u >= 0 && u < 1))
            throw new ArgumentOutOfRangeException(nameof(u), u, "u must be in [0, 1).");
        var total = 0.0;
        foreach (var value in probabilities)
            total += value;
        if (!(total > 0))
            throw new ArgumentException("The probabilities sum to zero.", nameof(probabilities));
        var target = u * total;
        var cumulative = 0.0;
        var last = -1;
        for (var i = 0; i < probabilities.Length; i++)
        {
            if (probabilities[i] <= 0)
                continue;
            cumulative += probabilities[i];
            last = i;
            if (target < cumulative)
                return i;
        }
        return last; // rounding left target ≥ the final sum: the last possible id
    }

    /// <summary>log softmax of one row, in double (beam search scores). −∞ logits give −∞.</summary>
    public static void LogSoftmax(ReadOnlySpan<float> logits, Span<double> logProbabilities)
    {
        RequireLogits(logits);
        if (logProbabilities.Length != logits.Length)
            throw new ArgumentException($"{logProbabilities.Length} outputs for {logits.Length} logits.", nameof(logProbabilities));
        var max = (double)logits[Argmax(logits)];
        var sum = 0.0;
        foreach (var l in logits)
            sum += Math.Exp(l - max);
        var log = max + Math.Log(sum);
        for (var i = 0; i < logits.Length; i++)
            logProbabilities[i] = logits[i] - log;
    }

    /// <summary>A uniform double in [0, 1) from 53 random bits.</summary>
    internal static double NextUnit(ref SplitMix64 random) => (random.NextUInt64() >> 11) * (1.0 / (1UL << 53));

    private static int[] Descending(ReadOnlySpan<double> probabilities)
    {
        var order = new int[probabilities.Length];
        for (var i = 0; i < order.Length; i++)
            order[i] = i;
        var values = probabilities.ToArray();
        Array.Sort(order, (a, b) => values[a] != values[b] ? values[b].CompareTo(values[a]) : a.CompareTo(b));
        return order;
    }

    private static void Normalize(Span<double> probabilities)
    {
        var sum = 0.0;
        foreach (var value in probabilities)
            sum += value;
        for (var i = 0; i < probabilities.Length; i++)
            probabilities[i] /= sum;
    }

    private static void RequireLogits(ReadOnlySpan<float> logits)
    {
        if (logits.IsEmpty)
            throw new ArgumentException("No logits.", nameof(logits));
        for (var i = 0; i < logits.Length; i++)
        {
            if (float.IsNaN(logits[i]))
                throw new ArgumentException($"Logit {i} is NaN.", nameof(logits));
        }
    }
}

/// <summary>
/// Draws tokens one after another with fixed <see cref="SamplingOptions"/> from a seeded stream;
/// ids in <c>banned</c> (e.g. &lt;pad&gt; and &lt;bos&gt;, which a model must not emit) are never chosen.
/// </summary>
internal sealed class TokenSampler
{
    private readonly SamplingOptions options;
    private readonly int[] banned;
    private SplitMix64 random;
    private float[] scratch = [];

    /// <exception cref="ArgumentOutOfRangeException">Invalid options.</exception>
    public TokenSampler(SamplingOptions options, IEnumerable<int>? banned = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        this.options = options.Validate();
        this.banned = banned?.Distinct().ToArray() ?? [];
        random = new SplitMix64(options.Seed);
    }

    /// <summary>The options.</summary>
    public SamplingOptions Options => options;

    /// <summary>The next token for one row of logits [V].</summary>
    public int Next(ReadOnlySpan<float> logits)
    {
        if (scratch.Length != logits.Length)
            scratch = new float[logits.Length];
        logits.CopyTo(scratch);
        foreach (var id in banned)
        {
            if ((uint)id < (uint)scratch.Length)
                scratch[id] = float.NegativeInfinity;
        }
        if (options.IsGreedy)
            return Sampling.Argmax(scratch);
        var probabilities = Sampling.Distribution(scratch, options);
        return Sampling.Draw(probabilities, Sampling.NextUnit(ref random));
    }
}
