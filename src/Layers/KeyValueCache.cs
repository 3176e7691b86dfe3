using GpuTransformer.Kernels;
using GpuTransformer.Kernels.Backends;
using ILGPU.Runtime;

namespace GpuTransformer.Layers;

/// <summary>
/// The keys and values of the positions decoded so far, per layer, for incremental
/// (token-by-token) generation: each step projects only the new tokens, appends their keys and
/// values here and attends over everything cached, with the causal diagonal shifted by the
/// cached length. For an encoder–decoder model it also holds each decoder layer's
/// cross-attention keys and values, projected once from the encoder memory.
/// <para>
/// Layout per layer: [B, Tmax, 2E] with k in columns 0…E and v in E…2E of each position (the
/// same layout as the cross-attention's projected memory [B, S, 2E], so one attention call
/// serves both). Create it with <c>LanguageModel.CreateCache</c> or <c>Transformer.StartDecoding</c>.
/// </para>
/// </summary>
public sealed class KeyValueCache : IDisposable
{
    private readonly Tensor<float>[] self;
    private readonly Tensor<float>[] cross;
    private readonly int[] hostPadding;
    private readonly Tensor<int> padding;
    private bool anyPadding;
    private Tensor<float>? selfScratch;
    private Tensor<float>? crossScratch;

    internal KeyValueCache(ComputeDevice device, int layers, int batch, int maxLength, int dModel, int memoryLength = 0)
    {
        ArgumentNullException.ThrowIfNull(device);
        Require.Positive(layers, nameof(layers));
        Require.Positive(batch, nameof(batch));
        Require.Positive(maxLength, nameof(maxLength));
        Batch = batch;
        MaxLength = maxLength;
        DModel = dModel;
        MemoryLength = memoryLength;
        self = Enumerable.Range(0, layers).Select(_ => new Tensor<float>(device, batch, maxLength, 2 * dModel)).ToArray();
        cross = memoryLength > 0
            ? Enumerable.Range(0, layers).Select(_ => new Tensor<float>(device, batch, memoryLength, 2 * dModel)).ToArray()
            : [];
        hostPadding = new int[batch * maxLength];
        padding = new Tensor<int>(device, batch, maxLength);
    }

    /// <summary>Layers cached (one entry each).</summary>
    public int LayerCount => self.Length;

    /// <summary>B, the sequences decoded together.</summary>
    public int Batch { get; }

    /// <summary>Tmax, the most positions the cache holds.</summary>
    public int MaxLength { get; }

    /// <summary>E, the model width d_model.</summary>
    public int DModel { get; }

    /// <summary>S, the encoder memory's length (0 for a decoder-only model).</summary>
    public int MemoryLength { get; }

    /// <summary>Positions cached so far (the position of the next token).</summary>
    public int Length { get; private set; }

    /// <summary>Device bytes held by the cache.</summary>
    public long DeviceBytes() =>
        (self.Sum(t => t.Capacity) + cross.Sum(t => t.Capacity) + (selfScratch?.Capacity ?? 0) + (crossScratch?.Capacity ?? 0)) * sizeof(float)
        + padding.Capacity * sizeof(int);

    /// <summary>Forgets every cached position (the buffers are kept).</summary>
    public void Reset()
    {
        Length = 0;
        anyPadding = false;
        Array.Clear(hostPadding);
    }

    /// <summary>
    /// Beam search: sequence r continues sequence <paramref name="parents"/>[r]. Moves every
    /// layer's cached self-attention keys and values (positions 0…Length), the cross-attention
    /// keys and values, and the key padding so that row r holds what row parents[r] held. Rows
    /// that keep their own history are not copied; an identity permutation costs nothing.
    /// Scratch buffers are allocated on the first reorder that moves something.
    /// </summary>
    /// <exception cref="ArgumentException">Not B parents, or a parent outside [0, B).</exception>
    public void Reorder(ReadOnlySpan<int> parents)
    {
        if (parents.Length != Batch)
            throw new ArgumentException($"Reorder needs one parent per sequence ({Batch}), got {parents.Length}.", nameof(parents));
        var moved = false;
        for (var r = 0; r < parents.Length; r++)
        {
            if ((uint)parents[r] >= (uint)Batch)
                throw new ArgumentException($"Parent {parents[r]} of sequence {r} is outside [0, {Batch}).", nameof(parents));
            moved |= parents[r] != r;
        }
        if (!moved)
            return;
        foreach (var tensor in self)
            ReorderRows(tensor, parents, (long)Length * 2 * DModel, ref selfScratch);
        foreach (var tensor in cross)
            ReorderRows(tensor, parents, (long)MemoryLength * 2 * DModel, ref crossScratch);
        if (MemoryPadding is { } memoryPadding)
        {
            var rows = memoryPadding.ToArray();
            var reordered = new int[rows.Length];
            for (var r = 0; r < Batch; r++)
                rows.AsSpan(parents[r] * MemoryLength, MemoryLength).CopyTo(reordered.AsSpan(r * MemoryLength));
            memoryPadding.CopyFrom(reordered);
        }
        var padding = (int[])hostPadding.Clone();
        for (var r = 0; r < Batch; r++)
            padding.AsSpan(parents[r] * MaxLength, MaxLength).CopyTo(hostPadding.AsSpan(r * MaxLength));
    }

    /// <summary>Row r of <paramref name="tensor"/> [B, rows, 2E] := old row parents[r] (its first <paramref name="used"/> elements), through a scratch copy.</summary>
    private void ReorderRows(Tensor<float> tensor, ReadOnlySpan<int> parents, long used, ref Tensor<float>? scratch)
    {
        if (used == 0)
            return;
        scratch ??= new Tensor<float>(tensor.Device, [.. tensor.Shape]);
        scratch.CopyFrom(tensor);
        var stride = tensor.Length / Batch;
        var stream = tensor.Device.Stream;
        for (var r = 0; r < Batch; r++)
        {
            if (parents[r] != r)
                tensor.View.SubView((long)r * stride, used).CopyFrom(stream, scratch.View.SubView((long)parents[r] * stride, used));
        }
    }

    /// <summary>Layer <paramref name="layer"/>'s self-attention keys and values [B, Tmax, 2E].</summary>
    internal Tensor<float> SelfKeyValues(int layer) => self[layer];

    /// <summary>Decoder layer <paramref name="layer"/>'s cross-attention keys and values [B, S, 2E].</summary>
    internal Tensor<float> CrossKeyValues(int layer) => cross[layer];

    /// <summary>The encoder memory's key padding mask [B, S] (null: none), set when decoding starts.</summary>
    internal Tensor<int>? MemoryPadding { get; set; }

    /// <summary>
    /// Checks that <paramref name="newTokens"/> more positions fit, records their key padding
    /// (null: none padded) and returns the self-attention mask over all Length + Tn keys
    /// [B, Length + Tn], or null when no cached or new key is padded.
    /// </summary>
    internal Tensor<int>? Reserve(int batch, int newTokens, ReadOnlySpan<int> newPadding)
    {
        if (batch != Batch)
            throw new ArgumentException($"The cache holds {Batch} sequences but the new tokens have {batch}.", nameof(batch));
        if (Length + newTokens > MaxLength)
            throw new ArgumentException($"The cache holds {MaxLength} positions; {Length} are used and {newTokens} more do not fit.", nameof(newTokens));
        var keys = Length + newTokens;
        if (!newPadding.IsEmpty)
        {
            for (var b = 0; b < batch; b++)
            {
                for (var t = 0; t < newTokens; t++)
                {
                    var padded = newPadding[(b * newTokens) + t] != 0 ? 1 : 0;
                    hostPadding[(b * MaxLength) + Length + t] = padded;
                    anyPadding |= padded != 0;
                }
            }
        }
        if (!anyPadding)
            return null;
        // The kernel reads a dense [B, Tk] mask: compact the rows of the host copy.
        var mask = new int[batch * keys];
        for (var b = 0; b < batch; b++)
            hostPadding.AsSpan(b * MaxLength, keys).CopyTo(mask.AsSpan(b * keys));
        padding.Resize(batch, keys).CopyFrom(mask);
        return padding;
    }

    /// <summary>Marks <paramref name="newTokens"/> positions as cached (after every layer appended them).</summary>
    internal void Advance(int newTokens) => Length += newTokens;

    /// <summary>Frees the cache's device buffers.</summary>
    public void Dispose()
    {
        foreach (var tensor in self.Concat(cross))
            tensor.Dispose();
        padding.Dispose();
        MemoryPadding?.Dispose();
        selfScratch?.Dispose();
        crossScratch?.Dispose();
    }
}
