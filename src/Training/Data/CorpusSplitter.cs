namespace GpuTransformer.Training.Data;

/// <summary>
/// Deterministic train/valid/test splits.
/// <list type="bullet">
/// <item>By document (folders with at least 3 documents, the State of the Union): documents are
/// sorted by name (ordinal), shuffled by a seeded Fisher–Yates (<see cref="SplitMix64"/>); the first
/// round(n·valid) (at least 1) go to valid, the next round(n·test) (at least 1) to test, the rest to
/// train. Each split is then put back in name order. Same files + same seed → same split, on any machine.</item>
/// <item>By position (one file, or fewer than 3 documents): the text is cut contiguously at
/// ≈ (1 − valid − test) and ≈ (1 − test) of its characters, each cut moved forward to the next line
/// break (if one is within 1% of the text) or else to the next whitespace: train is the head, valid the
/// middle, test the tail. Contiguous cuts keep neighbouring sentences out of different splits.</item>
/// </list>
/// </summary>
public static class CorpusSplitter
{
    /// <summary>Seed of the document shuffle unless told otherwise.</summary>
    public const int DefaultSeed = 1234;

    /// <summary>Default share of documents (or text) for validation.</summary>
    public const double DefaultValidFraction = 0.05;

    /// <summary>Default share of documents (or text) for test.</summary>
    public const double DefaultTestFraction = 0.05;

    /// <summary>Splits <paramref name="documents"/> (at least 3) by document; see the class summary.</summary>
    public static (List<TextDocument> Train, List<TextDocument> Valid, List<TextDocument> Test) SplitDocuments(
        IReadOnlyList<TextDocument> documents, int seed = DefaultSeed, double validFraction = DefaultValidFraction, double testFraction = DefaultTestFraction)
    {
        ArgumentNullException.ThrowIfNull(documents);
        CheckFractions(validFraction, testFraction);
        var n = documents.Count;
        if (n < 3)
            throw new ArgumentException($"Splitting by document needs at least 3 documents, got {n}.", nameof(documents));
        var validCount = Math.Max(1, (int)Math.Round(n * validFraction, MidpointRounding.AwayFromZero));
        var testCount = Math.Max(1, (int)Math.Round(n * testFraction, MidpointRounding.AwayFromZero));
        if (validCount + testCount >= n)
            (validCount, testCount) = (1, 1);

        var order = documents.OrderBy(d => d.Name, StringComparer.Ordinal).ToArray();
        var rng = new SplitMix64((ulong)(uint)seed);
        for (var i = n - 1; i > 0; i--)
        {
            var j = (int)rng.NextBelow(i + 1);
            (order[i], order[j]) = (order[j], order[i]);
        }
        static List<TextDocument> ByName(IEnumerable<TextDocument> docs) => docs.OrderBy(d => d.Name, StringComparer.Ordinal).ToList();
        return (
            ByName(order.Skip(validCount + testCount)),
            ByName(order.Take(validCount)),
            ByName(order.Skip(validCount).Take(testCount)));
    }

    /// <summary>Splits one text contiguously; see the class summary.</summary>
    /// <exception cref="ArgumentException">The text is too short to give three non-empty parts.</exception>
    public static (string Train, string Valid, string Test) SplitText(
        string text, double validFraction = DefaultValidFraction, double testFraction = DefaultTestFraction)
    {
        ArgumentNullException.ThrowIfNull(text);
        CheckFractions(validFraction, testFraction);
        var first = Cut(text, (int)Math.Round(text.Length * (1 - validFraction - testFraction)), 1);
        var second = Cut(text, (int)Math.Round(text.Length * (1 - testFraction)), first + 1);
        var train = text[..first];
        var valid = text[first..second];
        var test = text[second..];
        if (string.IsNullOrWhiteSpace(train) || string.IsNullOrWhiteSpace(valid) || string.IsNullOrWhiteSpace(test))
            throw new ArgumentException($"Text of {text.Length:N0} characters is too short to split into train/valid/test.", nameof(text));
        return (train, valid, test);
    }

    /// <summary>Split rule in words, for <see cref="TextCorpus.SplitRule"/>.</summary>
    public static string DescribeDocumentSplit(int seed, double validFraction, double testFraction) =>
        $"by document: seeded shuffle (SplitMix64, seed {seed}) of the name-sorted documents, {validFraction:P0} valid / {testFraction:P0} test (≥ 1 each), rest train";

    /// <summary>Split rule in words, for <see cref="TextCorpus.SplitRule"/>.</summary>
    public static string DescribeTextSplit(double validFraction, double testFraction) =>
        $"contiguous by position: first {1 - validFraction - testFraction:P0} train, next {validFraction:P0} valid, last {testFraction:P0} test, cut at line breaks (or whitespace)";

    private static int Cut(string text, int target, int minimum)
    {
        target = Math.Clamp(target, minimum, text.Length);
        var window = Math.Max(1, text.Length / 100);
        var newline = text.IndexOf('\n', target, Math.Min(window, text.Length - target));
        if (newline >= 0)
            return newline + 1;
        for (var i = target; i < text.Length; i++)
        {
            if (char.IsWhiteSpace(text[i]))
                return i + 1;
        }
        return target;
    }

    private static void CheckFractions(double validFraction, double testFraction)
    {
        if (!(validFraction > 0 && testFraction > 0 && validFraction + testFraction < 1))
            throw new ArgumentOutOfRangeException(nameof(validFraction), $"Valid ({validFraction}) and test ({testFraction}) fractions must be positive and sum to less than 1.");
    }
}
