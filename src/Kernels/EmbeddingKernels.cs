using GpuTransformer.Kernels.Backends;
using GpuTransformer.Kernels.Profiling;
using ILGPU;
using ILGPU.Runtime;

namespace GpuTransformer.Kernels;

/// <summary>Where the tokens of a batch sit for the fused positional encoding: token n is at position (n mod Sequence) + Offset.</summary>
/// <param name="Sequence">Tokens per sequence T (the batch holds whole sequences: N = B·T).</param>
/// <param name="Offset">Position of each sequence's first token (the KV-cache length when decoding).</param>
public readonly record struct SinusoidalPositions(int Sequence, int Offset = 0);

/// <summary>
/// Token embedding: a table lookup scaled by √d_model (the paper's scale), optionally fused
/// with the sinusoidal positional encoding, and its backward, a scatter-add into the table.
/// <para>
/// The backward is deterministic without atomics: <see cref="TokenBuckets"/> sorts the
/// positions by token id on the host (stable counting sort, CSR offsets per unique token),
/// and one thread per (unique token, channel) sums that token's positions in ascending order.
/// </para>
/// </summary>
public sealed class EmbeddingKernels : IKernelFamily<EmbeddingKernels>
{
    private readonly ComputeDevice device;
    private readonly int groupSize;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<ulong>, ForwardShape> forward;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, ArrayView<int>, int, float> backward;

    private EmbeddingKernels(ComputeDevice device)
    {
        this.device = device;
        var accelerator = device.Accelerator;
        groupSize = device.Tuning.ElementGroupSize;
        Require.Positive(groupSize, nameof(KernelTuning.ElementGroupSize));
        forward = accelerator.LoadKernel<ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<ulong>, ForwardShape>(ForwardKernel);
        backward = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, ArrayView<int>, int, float>(BackwardKernel);
    }

    /// <inheritdoc/>
    public static EmbeddingKernels Create(ComputeDevice device) => new(device);

    /// <inheritdoc/>
    public static IEnumerable<KernelEntry> EntryPoints(KernelTuning tuning) =>
    [
        KernelEntry.Of(ForwardKernel),
        KernelEntry.Of(BackwardKernel),
    ];

    /// <summary>
    /// output[n, :] = table[tokens[n], :] · scale (+ PE[(n mod T) + offset, :] when
    /// <paramref name="positions"/> is given), for the N ids held by <paramref name="tokens"/>,
    /// which were range-checked on the host. // output [N, C], table [V, C]
    /// </summary>
    /// <exception cref="ArgumentException">Unbuilt or foreign buckets, non-positive sizes, short views, or N not a multiple of the sequence length.</exception>
    public void Forward(ArrayView<float> output, TokenBuckets tokens, ArrayView<float> table, int channels, float scale = 1f, SinusoidalPositions? positions = null)
    {
        RequireBuilt(tokens);
        Forward(output, tokens.Tokens, table, tokens.Count, tokens.Vocabulary, channels, scale, positions);
    }

    /// <summary>
    /// output[n, :] = table[tokens[n], :] · scale (+ PE[(n mod T) + offset, :] when
    /// <paramref name="positions"/> is given) for ids already on the device (e.g. sampled
    /// tokens while decoding). Ids cannot be checked here: a row whose id lies outside
    /// [0, vocabulary) becomes NaN instead of reading out of bounds. // output [N, C], tokens [N], table [V, C]
    /// </summary>
    /// <exception cref="ArgumentException">Non-positive sizes, short views, or N not a multiple of the sequence length.</exception>
    public void Forward(
        ArrayView<float> output, ArrayView<int> tokens, ArrayView<float> table,
        int count, int vocabulary, int channels, float scale = 1f, SinusoidalPositions? positions = null)
    {
        var outputCount = Require.Product("output [N, C]", count, channels);
        var tableCount = Require.Product("table [V, C]", vocabulary, channels);
        Require.Holds(output, outputCount, nameof(output), $"[{count}, {channels}]");
        Require.Holds(tokens, count, nameof(tokens), $"[{count}]");
        Require.Holds(table, tableCount, nameof(table), $"[{vocabulary}, {channels}]");
        (output, table) = (output.SubView(0, outputCount), table.SubView(0, tableCount)); // overlap checks see the used ranges only
        Require.Distinct(output, nameof(output), table, nameof(table));
        // Without positions the batch is one sequence of N tokens and the encoding is off.
        var (sequence, offset, encode) = (count, 0, 0);
        if (positions is { } p)
        {
            Require.Positive(p.Sequence, "positions.Sequence");
            if (count % p.Sequence != 0)
                throw new ArgumentException($"{count} tokens are not whole sequences of {p.Sequence}.", nameof(positions));
            PositionalEncodingKernels.RequirePositions(p.Sequence, p.Offset);
            (sequence, offset, encode) = (p.Sequence, p.Offset, 1);
        }
        var rates = device.Kernels<PositionalEncodingKernels>().Rates(channels);
        using var profile = device.Profile("Embedding", positions is null ? "forward" : "forward + PE", 0, 2.0 * sizeof(float) * outputCount);
        forward(
            device.Stream, RowGrid.Config(count, channels, groupSize), output, tokens, table, rates,
            new ForwardShape(channels, vocabulary, scale, sequence, offset, encode));
    }

    /// <summary>
    /// dTable[v, :] (+)= Σ_{n: tokens[n] = v} dOutput[n, :] · scale, summed per token in
    /// ascending n (bit-reproducible). Without <paramref name="accumulate"/> the whole table
    /// gradient is overwritten (rows of absent tokens become 0); with it the sums are added
    /// (weight tying: the output projection's gradient already sits in dTable).
    /// // dTable [V, C], dOutput [N, C]
    /// </summary>
    /// <exception cref="ArgumentException">Unbuilt or foreign buckets, non-positive sizes, or short views.</exception>
    public void Backward(ArrayView<float> dTable, ArrayView<float> dOutput, TokenBuckets tokens, int channels, float scale = 1f, bool accumulate = false)
    {
        RequireBuilt(tokens);
        var outputCount = Require.Product("dOutput [N, C]", tokens.Count, channels);
        var tableCount = Require.Product("dTable [V, C]", tokens.Vocabulary, channels);
        Require.Holds(dOutput, outputCount, nameof(dOutput), $"[{tokens.Count}, {channels}]");
        Require.Holds(dTable, tableCount, nameof(dTable), $"[{tokens.Vocabulary}, {channels}]");
        (dTable, dOutput) = (dTable.SubView(0, tableCount), dOutput.SubView(0, outputCount)); // overlap checks see the used ranges only
        Require.Distinct(dTable, nameof(dTable), dOutput, nameof(dOutput));
        using var profile = device.Profile("Embedding", "backward", 0, sizeof(float) * (2.0 * outputCount + (accumulate ? 1 : 2) * tableCount));
        if (!accumulate)
            dTable.MemSetToZero(device.Stream);
        backward(device.Stream, RowGrid.Config(tokens.UniqueCount, channels, groupSize), dTable, dOutput, tokens.UniqueTokens, tokens.Offsets, tokens.Positions, channels, scale);
    }

    private void RequireBuilt(TokenBuckets tokens)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        if (tokens.Device != device)
            throw new ArgumentException("The token buckets belong to another device.", nameof(tokens));
        if (tokens.Count == 0)
            throw new ArgumentException("The token buckets are empty: call Build first.", nameof(tokens));
    }

    /// <summary>Sizes of the forward, packed to keep the kernel signature short. Encode 0: no positional encoding.</summary>
    internal readonly record struct ForwardShape(int Channels, int Vocabulary, float Scale, int Sequence, int PositionOffset, int Encode);

    // One thread per (token n, channel c).
    private static void ForwardKernel(ArrayView<float> output, ArrayView<int> tokens, ArrayView<float> table, ArrayView<ulong> turnRates, ForwardShape shape)
    {
        var (n, c) = (RowGrid.Row, RowGrid.Column);
        if (c >= shape.Channels)
            return;
        var id = tokens[n];
        var value = (uint)id < (uint)shape.Vocabulary ? table[id * shape.Channels + c] * shape.Scale : float.NaN;
        if (shape.Encode != 0)
            value += PositionalEncodingKernels.Value(n % shape.Sequence + shape.PositionOffset, c, turnRates);
        output[n * shape.Channels + c] = value;
    }

    // One thread per (unique token u, channel c): sums the token's positions in ascending order.
    private static void BackwardKernel(
        ArrayView<float> dTable, ArrayView<float> dOutput,
        ArrayView<int> uniqueTokens, ArrayView<int> offsets, ArrayView<int> positions, int channels, float scale)
    {
        var (u, c) = (RowGrid.Row, RowGrid.Column);
        if (c >= channels)
            return;
        var sum = 0f;
        var end = offsets[u + 1];
        for (var j = offsets[u]; j < end; j++)
            sum += dOutput[positions[j] * channels + c];
        var target = uniqueTokens[u] * channels + c;
        dTable[target] += sum * scale;
    }
}

/// <summary>
/// The token ids of one batch, range-checked on the host and uploaded, with the bucket
/// structure the deterministic embedding backward needs: positions sorted stably by token
/// id, the distinct ids in ascending order, and CSR offsets (token u owns
/// positions[offsets[u] … offsets[u+1])). Reusable: after the first <see cref="Build"/>
/// for a given N and V no further host or device memory is allocated. Not thread-safe.
/// </summary>
public sealed class TokenBuckets : IDisposable
{
    // Host staging and device copy share one layout: [tokens N | positions N | unique U | offsets U+1],
    // so a build is one upload (ILGPU's CopyFromCPU synchronizes the stream).
    private int[] staging = [];
    private int[] cursors = [];
    private MemoryBuffer1D<int, Stride1D.Dense>? buffer;

    /// <summary>Buckets whose device buffers live on <paramref name="device"/>.</summary>
    public TokenBuckets(ComputeDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        Device = device;
    }

    /// <summary>The device the buffers live on.</summary>
    public ComputeDevice Device { get; }

    /// <summary>Device bytes of the buckets of <paramref name="tokens"/> tokens (ids, positions, distinct ids and offsets: at most 4N + 1 ints).</summary>
    public static long DeviceBytes(long tokens) => sizeof(int) * Slots(tokens);

    /// <summary>Number of tokens N of the last build (0 before the first).</summary>
    public int Count { get; private set; }

    /// <summary>Vocabulary size V the ids were checked against.</summary>
    public int Vocabulary { get; private set; }

    /// <summary>Number of distinct ids U.</summary>
    public int UniqueCount { get; private set; }

    /// <summary>The ids on the device, in batch order. // [N]</summary>
    public ArrayView<int> Tokens => View(0, Count);

    /// <summary>Positions n sorted stably by tokens[n] (host copy). // [N]</summary>
    public ReadOnlySpan<int> HostPositions => Count == 0 ? default : staging.AsSpan(Count, Count);

    /// <summary>The distinct ids in ascending order (host copy). // [U]</summary>
    public ReadOnlySpan<int> HostUniqueTokens => Count == 0 ? default : staging.AsSpan(2 * Count, UniqueCount);

    /// <summary>CSR offsets into <see cref="HostPositions"/> per distinct id (host copy). // [U + 1]</summary>
    public ReadOnlySpan<int> HostOffsets => Count == 0 ? default : staging.AsSpan(2 * Count + UniqueCount, UniqueCount + 1);

    /// <summary>Slots of the staging and device layout [tokens N | positions N | unique ≤ N | offsets ≤ N + 1].</summary>
    private static long Slots(long tokens) => (4 * tokens) + 1;

    internal ArrayView<int> Positions => View(Count, Count);

    internal ArrayView<int> UniqueTokens => View(2 * Count, UniqueCount);

    internal ArrayView<int> Offsets => View(2 * Count + UniqueCount, UniqueCount + 1);

    /// <summary>
    /// Checks every id against [0, <paramref name="vocabulary"/>), buckets the positions by id
    /// and uploads ids and buckets. Synchronizes the device stream (the upload does).
    /// </summary>
    /// <exception cref="ArgumentException">No tokens, a non-positive vocabulary, or an id out of range (the message names id, position and vocabulary size).</exception>
    public void Build(ReadOnlySpan<int> tokens, int vocabulary)
    {
        Require.Positive(tokens.Length, "tokens.Length");
        Require.Positive(vocabulary, nameof(vocabulary));
        for (var n = 0; n < tokens.Length; n++)
        {
            if ((uint)tokens[n] >= (uint)vocabulary)
                throw new ArgumentException($"Token id {tokens[n]} at position {n} is outside the vocabulary [0, {vocabulary}).", nameof(tokens));
        }
        var count = tokens.Length;
        var needed = Slots(count);
        if (needed > int.MaxValue)
            throw new ArgumentException($"{count} tokens are too many for one batch.", nameof(tokens));
        if (staging.Length < needed)
            staging = new int[needed];
        if (cursors.Length < vocabulary)
            cursors = new int[vocabulary];

        // Counting sort: histogram, then each id's first slot, then positions in ascending n (stable).
        var histogram = cursors.AsSpan(0, vocabulary);
        histogram.Clear();
        foreach (var id in tokens)
            histogram[id]++;
        tokens.CopyTo(staging);
        var positions = staging.AsSpan(count, count);
        var unique = staging.AsSpan(2 * count);
        var uniqueCount = 0;
        var running = 0;
        for (var v = 0; v < vocabulary; v++)
        {
            var occurrences = histogram[v];
            if (occurrences == 0)
                continue;
            unique[uniqueCount++] = v;
            histogram[v] = running;
            running += occurrences;
        }
        var offsets = staging.AsSpan(2 * count + uniqueCount, uniqueCount + 1);
        for (var u = 0; u < uniqueCount; u++)
            offsets[u] = histogram[unique[u]];
        offsets[uniqueCount] = count;
        for (var n = 0; n < count; n++)
            positions[histogram[tokens[n]]++] = n;

        var used = 2 * count + 2 * uniqueCount + 1;
        if (buffer is null || buffer.Length < staging.Length)
        {
            Device.Synchronize(); // earlier launches may still read the old buffer
            buffer?.Dispose();
            buffer = Device.Accelerator.Allocate1D<int>(staging.Length);
        }
        using var profile = Device.ProfileHost(ProfileRowKind.Upload, "token buckets", sizeof(int) * (double)used);
        buffer.View.SubView(0, used).CopyFromCPU(Device.Stream, new ReadOnlySpan<int>(staging, 0, used));
        (Count, Vocabulary, UniqueCount) = (count, vocabulary, uniqueCount);
    }

    private ArrayView<int> View(int start, int length) =>
        buffer is null ? default : buffer.View.SubView(start, length);

    /// <inheritdoc/>
    public void Dispose()
    {
        buffer?.Dispose();
        buffer = null;
        Count = 0;
    }
}
