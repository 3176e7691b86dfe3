using System.Text;

namespace GpuTransformer.Training.Data;

/// <summary>One document of a corpus: a file of a folder, one State of the Union address, or one WikiText split.</summary>
/// <param name="Name">Its name (the file name relative to the corpus folder).</param>
/// <param name="Text">Its text: UTF-8 decoded, line endings normalised to <c>\n</c>, no BOM.</param>
public sealed record TextDocument(string Name, string Text)
{
    /// <summary>Size of the text in UTF-8 bytes.</summary>
    public long Utf8Bytes => Encoding.UTF8.GetByteCount(Text);
}

/// <summary>The three splits of a corpus.</summary>
public enum CorpusSplit
{
    /// <summary>Training documents.</summary>
    Train,
    /// <summary>Validation documents.</summary>
    Valid,
    /// <summary>Test documents.</summary>
    Test,
}

/// <summary>
/// A text corpus split into train/valid/test documents. The splits are disjoint and
/// deterministic (see <see cref="CorpusSplitter"/> and <see cref="SplitRule"/>); within a
/// split, documents keep their name order (chronological for the State of the Union).
/// </summary>
public sealed class TextCorpus
{
    /// <summary>A corpus from its splits (see <see cref="Corpora.Load"/> to read one).</summary>
    public TextCorpus(
        string name,
        string source,
        string splitRule,
        IReadOnlyList<TextDocument> train,
        IReadOnlyList<TextDocument> valid,
        IReadOnlyList<TextDocument> test)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(train);
        ArgumentNullException.ThrowIfNull(valid);
        ArgumentNullException.ThrowIfNull(test);
        if (train.Count == 0 || valid.Count == 0 || test.Count == 0)
            throw new ArgumentException($"Corpus '{name}' needs at least one document in each split (train {train.Count}, valid {valid.Count}, test {test.Count}).");
        Name = name;
        Source = source;
        SplitRule = splitRule;
        Train = train;
        Valid = valid;
        Test = test;
    }

    /// <summary>Short name: <c>sotu</c>, <c>wikitext</c>, or the folder/file name.</summary>
    public string Name { get; }

    /// <summary>Where the text came from (a path).</summary>
    public string Source { get; }

    /// <summary>How the splits were made, in words (for logs and the README).</summary>
    public string SplitRule { get; }

    /// <summary>Training documents, in name order.</summary>
    public IReadOnlyList<TextDocument> Train { get; }

    /// <summary>Validation documents, in name order.</summary>
    public IReadOnlyList<TextDocument> Valid { get; }

    /// <summary>Test documents, in name order.</summary>
    public IReadOnlyList<TextDocument> Test { get; }

    /// <summary>The documents of <paramref name="split"/>.</summary>
    public IReadOnlyList<TextDocument> Documents(CorpusSplit split) => split switch
    {
        CorpusSplit.Train => Train,
        CorpusSplit.Valid => Valid,
        CorpusSplit.Test => Test,
        _ => throw new ArgumentOutOfRangeException(nameof(split)),
    };

    /// <summary>Documents in all splits.</summary>
    public int DocumentCount => Train.Count + Valid.Count + Test.Count;

    /// <summary>UTF-8 bytes of <paramref name="split"/>.</summary>
    public long Bytes(CorpusSplit split) => Documents(split).Sum(d => d.Utf8Bytes);

    /// <summary>UTF-8 bytes of all splits.</summary>
    public long TotalBytes => Bytes(CorpusSplit.Train) + Bytes(CorpusSplit.Valid) + Bytes(CorpusSplit.Test);

    /// <inheritdoc/>
    public override string ToString() =>
        $"{Name}: {DocumentCount} documents ({Train.Count}/{Valid.Count}/{Test.Count}), {TotalBytes:N0} bytes, from {Source}";
}
