namespace GpuTransformer.Layers;

/// <summary>
/// Token ids [B, T] on the host, row-major — the input of the embeddings and the targets of
/// the loss. Models take ids from the host (a batcher's arrays) because they are validated
/// there (an out-of-range id cannot be reported from a kernel) and because the deterministic
/// embedding backward buckets positions by id on the host; the models upload them.
/// </summary>
public sealed class TokenIds
{
    /// <summary>Wraps <paramref name="values"/> (not copied) as [<paramref name="batch"/>, <paramref name="length"/>].</summary>
    /// <exception cref="ArgumentException">A size is not positive or the count is not batch · length.</exception>
    public TokenIds(ReadOnlyMemory<int> values, int batch, int length)
    {
        if (batch < 1 || length < 1)
            throw new ArgumentException($"Token ids need a positive shape, got [{batch}, {length}].", batch < 1 ? nameof(batch) : nameof(length));
        if (values.Length != (long)batch * length)
            throw new ArgumentException($"{values.Length} token ids cannot have shape [{batch}, {length}] ({(long)batch * length} ids).", nameof(values));
        Values = values;
        Batch = batch;
        Length = length;
    }

    /// <summary>The ids, row-major [B, T].</summary>
    public ReadOnlyMemory<int> Values { get; }

    /// <summary>B, the number of sequences.</summary>
    public int Batch { get; }

    /// <summary>T, the tokens per sequence.</summary>
    public int Length { get; }

    /// <summary>B · T.</summary>
    public int Count => Batch * Length;

    /// <summary>The ids as a span.</summary>
    public ReadOnlySpan<int> Span => Values.Span;

    /// <summary>The id of sequence <paramref name="b"/> at position <paramref name="t"/>.</summary>
    public int this[int b, int t] => Values.Span[(b * Length) + t];

    /// <summary>The shape as text, e.g. <c>[2, 16]</c>.</summary>
    public override string ToString() => $"[{Batch}, {Length}]";

    /// <summary>
    /// Throws an ArgumentException naming the first id outside [0, <paramref name="vocabulary"/>)
    /// with its position [b, t] and the vocabulary size; <paramref name="ignored"/> (a loss's
    /// ignore index) is allowed too.
    /// </summary>
    public void RequireInVocabulary(int vocabulary, string name, int? ignored = null)
    {
        var span = Span;
        for (var n = 0; n < span.Length; n++)
        {
            var id = span[n];
            if ((uint)id >= (uint)vocabulary && id != ignored)
            {
                throw new ArgumentException(
                    $"Token id {id} at [{n / Length}, {n % Length}] of {name} is outside the vocabulary of size {vocabulary}" +
                    (ignored is { } i ? $" (and is not the ignore index {i})." : "."), name);
            }
        }
    }

    /// <summary>Throws an ArgumentException unless the sequences are at most <paramref name="maxLength"/> long.</summary>
    internal void RequireLengthAtMost(int maxLength, string name)
    {
        if (Length > maxLength)
            throw new ArgumentException($"{name} {this} has sequences of {Length} tokens, longer than max_seq_len {maxLength}.", name);
    }

    /// <summary>Throws an ArgumentException naming both shapes unless <paramref name="other"/> has this shape.</summary>
    internal void RequireSameShape(TokenIds other, string name, string otherName)
    {
        ArgumentNullException.ThrowIfNull(other);
        if (other.Batch != Batch || other.Length != Length)
            throw new ArgumentException($"{otherName} has shape {other} but {name} has shape {this}; they must match.", otherName);
    }
}
