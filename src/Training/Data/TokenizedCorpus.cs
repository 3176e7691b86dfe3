using GpuTransformer.Training.Tokenizers;

namespace GpuTransformer.Training.Data;

/// <summary>
/// A corpus as token streams, one per split: each document's ids followed by <c>&lt;eos&gt;</c>
/// (the document separator), documents in split order. These streams are what the batchers
/// cut windows from and what <see cref="UnigramBaseline"/> counts.
/// </summary>
public sealed class TokenizedCorpus
{
    private TokenizedCorpus(ITokenizer tokenizer, int[] train, int[] valid, int[] test)
    {
        Tokenizer = tokenizer;
        Train = train;
        Valid = valid;
        Test = test;
    }

    /// <summary>The tokenizer the ids come from.</summary>
    public ITokenizer Tokenizer { get; }

    /// <summary>The training split as one id stream (documents joined by the separator).</summary>
    public int[] Train { get; }

    /// <summary>The validation split as one id stream.</summary>
    public int[] Valid { get; }

    /// <summary>The test split as one id stream.</summary>
    public int[] Test { get; }

    /// <summary>The stream of <paramref name="split"/>.</summary>
    public int[] Tokens(CorpusSplit split) => split switch
    {
        CorpusSplit.Train => Train,
        CorpusSplit.Valid => Valid,
        CorpusSplit.Test => Test,
        _ => throw new ArgumentOutOfRangeException(nameof(split)),
    };

    /// <summary>Encodes every split of <paramref name="corpus"/> with <paramref name="tokenizer"/> (documents in parallel).</summary>
    public static TokenizedCorpus Create(TextCorpus corpus, ITokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(corpus);
        ArgumentNullException.ThrowIfNull(tokenizer);
        return new TokenizedCorpus(
            tokenizer,
            Encode(tokenizer, corpus.Train),
            Encode(tokenizer, corpus.Valid),
            Encode(tokenizer, corpus.Test));
    }

    /// <summary>The stream of <paramref name="documents"/>: ids of each, then <c>&lt;eos&gt;</c>.</summary>
    public static int[] Encode(ITokenizer tokenizer, IReadOnlyList<TextDocument> documents)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(documents);
        var parts = new int[documents.Count][];
        Parallel.For(0, documents.Count, i => parts[i] = tokenizer.Encode(documents[i].Text));
        var stream = new int[parts.Sum(p => p.Length + 1)];
        var at = 0;
        foreach (var part in parts)
        {
            part.CopyTo(stream, at);
            at += part.Length;
            stream[at++] = tokenizer.Specials.Eos;
        }
        return stream;
    }
}

/// <summary>
/// The unigram baseline a language model must beat: the training stream's token frequencies
/// with add-one (Laplace) smoothing over the whole vocabulary, p(w) = (count(w) + 1) / (N + V),
/// scored on another stream as cross-entropy H = −(1/M) Σ ln p(wᵢ) in nats per token, and
/// perplexity exp(H). Every token of the evaluated stream counts, <c>&lt;eos&gt;</c> and
/// <c>&lt;unk&gt;</c> included; V is the tokenizer's full vocabulary size.
/// </summary>
/// <param name="CrossEntropy">Nats per token.</param>
/// <param name="Perplexity">exp(CrossEntropy).</param>
/// <param name="TrainTokens">N.</param>
/// <param name="EvaluatedTokens">M.</param>
/// <param name="VocabularySize">V.</param>
public sealed record UnigramBaseline(double CrossEntropy, double Perplexity, long TrainTokens, long EvaluatedTokens, int VocabularySize)
{
    /// <summary>The smoothing, in words.</summary>
    public const string Smoothing = "add-one (Laplace) over the full vocabulary";

    /// <summary>Computes the baseline of <paramref name="train"/> scored on <paramref name="evaluated"/>.</summary>
    /// <exception cref="ArgumentException">Empty evaluated stream, or an id outside [0, V).</exception>
    public static UnigramBaseline Compute(ReadOnlySpan<int> train, ReadOnlySpan<int> evaluated, int vocabularySize)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(vocabularySize);
        if (evaluated.IsEmpty)
            throw new ArgumentException("The evaluated stream is empty.", nameof(evaluated));
        var counts = new long[vocabularySize];
        foreach (var id in train)
        {
            if ((uint)id >= (uint)vocabularySize)
                throw new ArgumentException($"Training id {id} is outside [0, {vocabularySize}).", nameof(train));
            counts[id]++;
        }
        var logDenominator = Math.Log(train.Length + (double)vocabularySize);
        var sum = 0.0;
        foreach (var id in evaluated)
        {
            if ((uint)id >= (uint)vocabularySize)
                throw new ArgumentException($"Evaluated id {id} is outside [0, {vocabularySize}).", nameof(evaluated));
            sum += logDenominator - Math.Log(counts[id] + 1.0);
        }
        var crossEntropy = sum / evaluated.Length;
        return new UnigramBaseline(crossEntropy, Math.Exp(crossEntropy), train.Length, evaluated.Length, vocabularySize);
    }

    /// <summary>The baseline of <paramref name="corpus"/>: train stream scored on the validation stream.</summary>
    public static UnigramBaseline OnValidation(TokenizedCorpus corpus)
    {
        ArgumentNullException.ThrowIfNull(corpus);
        return Compute(corpus.Train, corpus.Valid, corpus.Tokenizer.VocabularySize);
    }
}
