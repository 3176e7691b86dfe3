using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using GpuTransformer.Training.Data;

namespace GpuTransformer.Training.Tasks;

/// <summary>Settings of <see cref="NumbersToWordsTask"/> (stored in checkpoints as JSON).</summary>
public sealed record NumbersToWordsOptions
{
    /// <summary>Numbers have 1 … D digits: 0 … 10^D − 1 (1 ≤ D ≤ 12).</summary>
    [JsonPropertyName("max_digits")] public int MaxDigits { get; init; } = 6;

    /// <summary>Seed of the train/held-out split and of the number streams.</summary>
    [JsonPropertyName("seed")] public ulong Seed { get; init; } = 4072;

    /// <summary>Percentage of all numbers reserved for evaluation, never drawn for training (1 … 50).</summary>
    [JsonPropertyName("held_out_percent")] public int HeldOutPercent { get; init; } = 10;

    /// <summary>Held-out numbers in the evaluation set (at most all of them).</summary>
    [JsonPropertyName("evaluation_size")] public int EvaluationSize { get; init; } = 500;

    /// <summary>Returns this after checking the fields.</summary>
    public NumbersToWordsOptions Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxDigits, 1, nameof(MaxDigits));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(MaxDigits, 12, nameof(MaxDigits));
        ArgumentOutOfRangeException.ThrowIfLessThan(HeldOutPercent, 1, nameof(HeldOutPercent));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(HeldOutPercent, 50, nameof(HeldOutPercent));
        ArgumentOutOfRangeException.ThrowIfLessThan(EvaluationSize, 1, nameof(EvaluationSize));
        return this;
    }

    /// <summary>The options as JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this);

    /// <summary>Options from <see cref="ToJson"/>.</summary>
    /// <exception cref="FormatException">Not valid options.</exception>
    public static NumbersToWordsOptions FromJson(string json)
    {
        try
        {
            return (JsonSerializer.Deserialize<NumbersToWordsOptions>(json) ?? throw new FormatException("Task options are null.")).Validate();
        }
        catch (Exception e) when (e is JsonException or ArgumentException)
        {
            throw new FormatException($"Malformed task options: {e.Message}", e);
        }
    }
}

/// <summary>
/// The built-in translation task: a number in digits → its English words, e.g.
/// "4072" → "four thousand seventy two" (<see cref="NumberWords"/>). Source tokens are the digits
/// (character level), target tokens the number words (word level); both vocabularies put
/// &lt;pad&gt;, &lt;bos&gt;, &lt;eos&gt; at 0, 1, 2.
/// <para>
/// Deterministic from <see cref="NumbersToWordsOptions.Seed"/>: a hash of (seed, number)
/// reserves <see cref="NumbersToWordsOptions.HeldOutPercent"/>% of all numbers for evaluation,
/// and training draws only from the rest, so held-out numbers are never seen in training.
/// Numbers are drawn with a uniform digit count, then uniformly among numbers of that many digits
/// (so short numbers are not drowned by long ones); training batch k comes from a
/// <see cref="SplitMix64"/> seeded by (seed, k) alone, so resuming at step k is exact.
/// </para>
/// </summary>
public sealed class NumbersToWordsTask
{
    /// <summary>The task's name in checkpoints and on the command line.</summary>
    public const string Name = "numbers-to-words";

    private const ulong EvaluationStream = 0xE7A1;
    private readonly long[] evaluation;

    /// <summary>The task with <paramref name="options"/> (null: the defaults).</summary>
    public NumbersToWordsTask(NumbersToWordsOptions? options = null)
    {
        Options = (options ?? new NumbersToWordsOptions()).Validate();
        Limit = Pow10(Options.MaxDigits);
        Source = new TaskVocabulary(Enumerable.Range(0, 10).Select(d => d.ToString(CultureInfo.InvariantCulture)));
        Target = new TaskVocabulary(NumberWords.Vocabulary);
        evaluation = DrawEvaluationSet();
    }

    /// <summary>The settings.</summary>
    public NumbersToWordsOptions Options { get; }

    /// <summary>One more than the largest number (10^D).</summary>
    public long Limit { get; }

    /// <summary>Digits 0–9.</summary>
    public TaskVocabulary Source { get; }

    /// <summary>The number words.</summary>
    public TaskVocabulary Target { get; }

    /// <summary>Most source tokens (D).</summary>
    public int MaxSourceLength => Options.MaxDigits;

    /// <summary>
    /// Most target tokens without &lt;eos&gt;: the spelling of 77…7 (D digits) — every group of three
    /// at its longest ("seven hundred seventy seven") with its scale word.
    /// </summary>
    public int MaxTargetLength => NumberWords.ToWords((Limit - 1) / 9 * 7).Count;

    /// <summary>The fixed held-out evaluation numbers (deterministic, distinct, never drawn for training).</summary>
    public IReadOnlyList<long> EvaluationNumbers => evaluation;

    /// <summary>Whether <paramref name="number"/> is reserved for evaluation.</summary>
    public bool IsHeldOut(long number) =>
        SplitMix64.Mix(Options.Seed ^ SplitMix64.Mix((ulong)number + 0x9E3779B97F4A7C15UL)) % 100 < (ulong)Options.HeldOutPercent;

    /// <summary>The digits of <paramref name="number"/> as source ids.</summary>
    public int[] EncodeSource(long number) => EncodeSource(number.ToString(CultureInfo.InvariantCulture));

    /// <summary>Source ids of a digit string such as "4072".</summary>
    /// <exception cref="ArgumentException">Empty, not only digits, a leading zero, or more than D digits.</exception>
    public int[] EncodeSource(string digits)
    {
        ArgumentNullException.ThrowIfNull(digits);
        var text = digits.Trim();
        if (text.Length == 0 || !text.All(char.IsAsciiDigit))
            throw new ArgumentException($"'{digits}' is not a number in digits (0–9 only, e.g. 4072).", nameof(digits));
        if (text.Length > 1 && text[0] == '0')
            throw new ArgumentException($"'{digits}' has a leading zero; write {long.Parse(text, CultureInfo.InvariantCulture)}.", nameof(digits));
        if (text.Length > Options.MaxDigits)
            throw new ArgumentException($"'{digits}' has {text.Length} digits; this task covers numbers of at most {Options.MaxDigits} digits.", nameof(digits));
        return Source.Encode(text.Select(c => c.ToString()));
    }

    /// <summary>The words of <paramref name="number"/> as target ids (no &lt;bos&gt;/&lt;eos&gt;).</summary>
    public int[] EncodeTarget(long number) => Target.Encode(NumberWords.ToWords(number));

    /// <summary>Target ids as text (words joined by spaces; specials dropped).</summary>
    public string DecodeTarget(IEnumerable<int> ids) => string.Join(' ', Target.Decode(ids));

    /// <summary>The pair for <paramref name="number"/>.</summary>
    public SequencePair Pair(long number) => new(EncodeSource(number), EncodeTarget(number));

    /// <summary>The training numbers of batch <paramref name="step"/> (never held-out ones).</summary>
    public long[] TrainingNumbers(long step, int batchSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        var random = SplitMix64.ForIndex(Options.Seed, step);
        var numbers = new long[batchSize];
        for (var i = 0; i < batchSize; i++)
        {
            long n;
            do
                n = Draw(ref random);
            while (IsHeldOut(n));
            numbers[i] = n;
        }
        return numbers;
    }

    /// <summary>Training batch <paramref name="step"/>: teacher-forcing ids padded with &lt;pad&gt;.</summary>
    public Seq2SeqBatch TrainingBatch(long step, int batchSize) =>
        Seq2SeqBatch.Create([.. TrainingNumbers(step, batchSize).Select(Pair)], TaskVocabulary.Pad, TaskVocabulary.Bos, TaskVocabulary.Eos);

    /// <summary>A number with a uniform digit count 1…D, uniform among those numbers.</summary>
    private long Draw(ref SplitMix64 random)
    {
        var digits = (int)random.NextBelow(Options.MaxDigits) + 1;
        var low = digits == 1 ? 0 : Pow10(digits - 1);
        return low + random.NextBelow(Pow10(digits) - low);
    }

    private long[] DrawEvaluationSet()
    {
        var heldOut = 0L;
        var size = Options.EvaluationSize;
        if (Limit <= 1_000_000)
        {
            // Small spaces: count the held-out numbers so the set never asks for more than exist.
            for (var n = 0L; n < Limit; n++)
                heldOut += IsHeldOut(n) ? 1 : 0;
            size = (int)Math.Min(size, heldOut);
        }
        var random = new SplitMix64(Options.Seed ^ EvaluationStream);
        var chosen = new HashSet<long>();
        var order = new List<long>(size);
        // Same digit-count distribution as training; distinct numbers. When few held-out numbers
        // exist at some digit counts, the loop still ends: every draw can hit the rest.
        while (order.Count < size)
        {
            var n = Draw(ref random);
            if (IsHeldOut(n) && chosen.Add(n))
                order.Add(n);
        }
        return [.. order];
    }

    private static long Pow10(int digits)
    {
        var value = 1L;
        for (var i = 0; i < digits; i++)
            value *= 10;
        return value;
    }
}
