namespace GpuTransformer.Training.Tasks;

/// <summary>
/// Non-negative integers ↔ English words, short scale, no "and", no hyphens, no commas:
/// 4072 → "four thousand seventy two", 1010 → "one thousand ten", 900000 → "nine hundred thousand",
/// 0 → "zero". Every number below 10¹² has exactly one spelling (<see cref="ToWords"/>), and
/// <see cref="Parse(string)"/> accepts exactly those spellings.
/// </summary>
public static class NumberWords
{
    /// <summary>One more than the largest number spelled (10¹²).</summary>
    public const long Limit = 1_000_000_000_000;

    private static readonly string[] Small =
    [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
    ];

    private static readonly string[] Tens = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"];

    private static readonly (long Value, string Word)[] Scales = [(1_000_000_000, "billion"), (1_000_000, "million"), (1_000, "thousand")];

    /// <summary>Every word a spelling can use, in a fixed order (numbers' words, then hundred and the scales).</summary>
    public static IReadOnlyList<string> Vocabulary { get; } =
        [.. Small, .. Tens.Where(t => t.Length > 0), "hundred", .. Scales.Reverse().Select(s => s.Word)];

    /// <summary>The words of <paramref name="number"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Negative or ≥ <see cref="Limit"/>.</exception>
    public static IReadOnlyList<string> ToWords(long number)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(number);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(number, Limit);
        if (number == 0)
            return ["zero"];
        var words = new List<string>();
        var rest = number;
        foreach (var (value, word) in Scales)
        {
            if (rest >= value)
            {
                BelowThousand((int)(rest / value), words);
                words.Add(word);
                rest %= value;
            }
        }
        if (rest > 0)
            BelowThousand((int)rest, words);
        return words;
    }

    /// <summary>The words of <paramref name="number"/> joined by single spaces.</summary>
    public static string ToText(long number) => string.Join(' ', ToWords(number));

    /// <summary>The number spelled by <paramref name="words"/> (the exact form <see cref="ToWords"/> writes).</summary>
    /// <exception cref="FormatException">An unknown word, or words that are not the canonical spelling of any number.</exception>
    public static long Parse(IReadOnlyList<string> words)
    {
        ArgumentNullException.ThrowIfNull(words);
        if (words.Count == 0)
            throw new FormatException("No words.");
        long total = 0;
        long group = 0;
        foreach (var word in words)
        {
            var small = Array.IndexOf(Small, word);
            var tens = Array.IndexOf(Tens, word);
            var scale = Array.FindIndex(Scales, s => s.Word == word);
            if (small >= 0)
                group += small;
            else if (tens >= 2)
                group += 10 * tens;
            else if (word == "hundred")
                group *= 100;
            else if (scale >= 0)
            {
                total += group * Scales[scale].Value;
                group = 0;
            }
            else
                throw new FormatException($"'{word}' is not a number word.");
            if (total + group >= Limit)
                throw new FormatException($"'{string.Join(' ', words)}' is not below {Limit}.");
        }
        var number = total + group;
        // A loose sum accepts "one one" or "thousand"; only the canonical spelling round-trips.
        if (!ToWords(number).SequenceEqual(words))
            throw new FormatException($"'{string.Join(' ', words)}' is not how {number} is spelled ('{ToText(number)}').");
        return number;
    }

    /// <summary>The number spelled by <paramref name="text"/> (words separated by whitespace).</summary>
    public static long Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return Parse(text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries));
    }

    private static void BelowThousand(int n, List<string> words)
    {
        if (n >= 100)
        {
            words.Add(Small[n / 100]);
            words.Add("hundred");
            n %= 100;
        }
        if (n >= 20)
        {
            words.Add(Tens[n / 10]);
            n %= 10;
            if (n > 0)
                words.Add(Small[n]);
        }
        else if (n > 0)
        {
            words.Add(Small[n]);
        }
    }
}
