namespace GpuTransformer.Layers;

/// <summary>
/// Key padding masks [B, T] (1 = padded key) for the attention kernels, built on the host: given
/// explicitly, or derived from the ids (<c>ids == pad_id</c>, as PyTorch's reference models do).
/// </summary>
internal static class KeyPadding
{
    /// <summary>
    /// The host mask for <paramref name="ids"/>: <paramref name="explicitMask"/> when given (its
    /// length must be B·T), else ids == <paramref name="padId"/> (none when padId &lt; 0). Empty
    /// when no key is padded.
    /// </summary>
    public static int[] Host(TokenIds ids, int padId, ReadOnlyMemory<int> explicitMask, string name)
    {
        if (!explicitMask.IsEmpty)
        {
            if (explicitMask.Length != ids.Count)
                throw new ArgumentException($"{name} has {explicitMask.Length} entries but the ids have shape {ids} ({ids.Count}).", name);
            return explicitMask.Span.IndexOfAnyExcept(0) >= 0 ? explicitMask.ToArray() : [];
        }
        if (padId < 0 || !ids.Span.Contains(padId))
            return [];
        var mask = new int[ids.Count];
        var span = ids.Span;
        for (var n = 0; n < mask.Length; n++)
            mask[n] = span[n] == padId ? 1 : 0;
        return mask;
    }

    /// <summary>
    /// Checks <paramref name="ids"/> for a model before anything runs — at most
    /// <paramref name="maxLength"/> per sequence, a mask of their shape, every id in [0,
    /// <paramref name="vocabulary"/>) — and returns their host mask (<see cref="Host"/>).
    /// </summary>
    /// <exception cref="ArgumentException">The first problem, naming <paramref name="name"/> (or the mask), the id and its position.</exception>
    public static int[] Checked(TokenIds ids, string name, int maxLength, int vocabulary, int padId, ReadOnlyMemory<int> explicitMask, string maskName)
    {
        ArgumentNullException.ThrowIfNull(ids, name);
        ids.RequireLengthAtMost(maxLength, name);
        var mask = Host(ids, padId, explicitMask, maskName);
        ids.RequireInVocabulary(vocabulary, name);
        return mask;
    }

    /// <summary>Uploads <paramref name="mask"/> [B, T] into <paramref name="buffer"/>; null (no mask) when it is empty.</summary>
    public static Tensor<int>? Upload(Tensor<int> buffer, int[] mask, TokenIds ids)
    {
        if (mask.Length == 0)
            return null;
        buffer.Resize(ids.Batch, ids.Length).CopyFrom(mask);
        return buffer;
    }
}
