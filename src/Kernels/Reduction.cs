using GpuTransformer.Kernels.Backends;
using ILGPU;
using ILGPU.Runtime;

namespace GpuTransformer.Kernels;

/// <summary>
/// Deterministic reductions for bias gradients and the trainer: column sums, the sum of a
/// vector and the global gradient norm (with PyTorch's clip factor). No atomics: every
/// sum runs in an order fixed by the sizes and the group size alone, so repeated runs on
/// one device are bit-identical.
/// <para>
/// Scheme: a first pass of many groups writes partial sums (each group: threads stride over
/// a contiguous chunk, then <see cref="GroupReduce.Sum"/>), a second pass of one group
/// reduces the partials. Column sums split the rows into chunks instead: one thread per
/// (chunk, column) sums its rows in order, then one thread per column sums the chunks.
/// </para>
/// </summary>
public sealed class Reduction : IKernelFamily<Reduction>, IDisposable
{
    /// <summary>Most partial sums one vector reduction writes (groups of its first pass).</summary>
    public const int MaxPartials = 1024;

    /// <summary>Elements per thread below which a reduction uses fewer groups.</summary>
    private const int ElementsPerThread = 16;

    /// <summary>Rows per chunk of the column sums are at least this, and at most <see cref="MaxRowChunks"/> chunks are used.</summary>
    private const int MinRowsPerChunk = 16;

    private const int MaxRowChunks = 256;

    private readonly ComputeDevice device;
    private readonly int groupSize;
    private readonly MemoryBuffer1D<float, Stride1D.Dense> partials;
    private MemoryBuffer1D<float, Stride1D.Dense>? columnScratch;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, int> partialSums;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, int> partialSquares;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int> finalSum;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, float> finalNorm;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ColumnShape> columnChunks;

    private Reduction(ComputeDevice device)
    {
        this.device = device;
        groupSize = device.Tuning.RowGroupSize;
        if (!GroupReduce.IsValidGroupSize(groupSize))
            throw new ArgumentException($"RowGroupSize {groupSize} must be a power of two ≤ {GroupReduce.MaxGroupSize}.", nameof(device));
        var accelerator = device.Accelerator;
        partialSums = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, int, int>(PartialSumsKernel<Identity>);
        partialSquares = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, int, int>(PartialSumsKernel<Square>);
        finalSum = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, int>(FinalSumKernel);
        finalNorm = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, int, float>(FinalNormKernel);
        columnChunks = accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ColumnShape>(ColumnChunkSumsKernel);
        partials = accelerator.Allocate1D<float>(MaxPartials);
    }

    /// <inheritdoc/>
    public static Reduction Create(ComputeDevice device) => new(device);

    /// <inheritdoc/>
    public static IEnumerable<KernelEntry> EntryPoints(KernelTuning tuning) =>
    [
        KernelEntry.Of(PartialSumsKernel<Identity>),
        KernelEntry.Of(PartialSumsKernel<Square>),
        KernelEntry.Of(FinalSumKernel),
        KernelEntry.Of(FinalNormKernel),
        KernelEntry.Of(ColumnChunkSumsKernel),
    ];

    /// <summary>
    /// output[n] (+)= Σ_m input[m, n]: the bias gradient of a linear layer. Rows are summed in
    /// chunks of a size fixed by <paramref name="rows"/>, then the chunks in order.
    /// // input [rows, columns] → output [columns]
    /// </summary>
    /// <exception cref="ArgumentException">Non-positive sizes, short views, or output overlapping input.</exception>
    public void ColumnSums(ArrayView<float> output, ArrayView<float> input, int rows, int columns, bool accumulate = false)
    {
        var count = Require.Product("input [rows, columns]", rows, columns);
        Require.Holds(output, columns, nameof(output), $"[{columns}]");
        Require.Holds(input, count, nameof(input), $"[{rows}, {columns}]");
        (output, input) = (output.SubView(0, columns), input.SubView(0, count)); // overlap checks see the used ranges only
        Require.Distinct(output, nameof(output), input, nameof(input));
        var rowsPerChunk = Math.Max(MinRowsPerChunk, (rows + MaxRowChunks - 1) / MaxRowChunks);
        var chunks = (rows + rowsPerChunk - 1) / rowsPerChunk;
        if (chunks == 1)
        {
            columnChunks(device.Stream, columns, output, input, new ColumnShape(rows, columns, rows, accumulate ? 1 : 0));
            return;
        }
        var scratch = ColumnScratch(chunks * columns);
        columnChunks(device.Stream, chunks * columns, scratch, input, new ColumnShape(rows, columns, rowsPerChunk, 0));
        columnChunks(device.Stream, columns, output, scratch, new ColumnShape(chunks, columns, chunks, accumulate ? 1 : 0));
    }

    /// <summary>result[0] = Σ input[i] over <paramref name="count"/> elements, in a fixed order.</summary>
    /// <exception cref="ArgumentException">A non-positive count or short views.</exception>
    public void Sum(ArrayView<float> result, ArrayView<float> input, int count)
    {
        Require.Positive(count, nameof(count));
        Require.Holds(result, 1, nameof(result), "[1]");
        Require.Holds(input, count, nameof(input), $"[{count}]");
        (result, input) = (result.SubView(0, 1), input.SubView(0, count)); // overlap checks see the used ranges only
        Require.Distinct(result, nameof(result), input, nameof(input));
        var groups = PartialCount(count);
        partialSums(device.Stream, new KernelConfig(groups, groupSize), partials.View, input, count, ChunkOf(count, groups));
        finalSum(device.Stream, new KernelConfig(1, groupSize), result, partials.View, groups);
    }

    /// <summary>
    /// How many partial slots <see cref="SumOfSquares"/> writes for a buffer of
    /// <paramref name="count"/> elements (between 1 and <see cref="MaxPartials"/>); size the
    /// norm scratch as the sum over all parameter buffers.
    /// </summary>
    public int PartialCount(int count)
    {
        Require.Positive(count, nameof(count));
        var perGroup = (long)groupSize * ElementsPerThread;
        return (int)Math.Min(MaxPartials, (count + perGroup - 1) / perGroup);
    }

    /// <summary>
    /// First pass of the global gradient norm: writes <see cref="PartialCount"/>(count)
    /// partial sums of input² to partials[offset …] and returns the next free offset. Call
    /// once per gradient buffer, in a fixed order, then <see cref="GlobalNorm"/>.
    /// </summary>
    /// <exception cref="ArgumentException">A non-positive count, a negative offset, or short views.</exception>
    public int SumOfSquares(ArrayView<float> partials, int offset, ArrayView<float> input, int count)
    {
        Require.NonNegative(offset, nameof(offset));
        var groups = PartialCount(count);
        Require.Holds(partials, (long)offset + groups, nameof(partials), $"[{offset} + {groups}]");
        Require.Holds(input, count, nameof(input), $"[{count}]");
        (partials, input) = (partials.SubView(offset, groups), input.SubView(0, count)); // overlap checks see the used ranges only
        Require.Distinct(partials, nameof(partials), input, nameof(input));
        partialSquares(device.Stream, new KernelConfig(groups, groupSize), partials, input, count, ChunkOf(count, groups));
        return offset + groups;
    }

    /// <summary>
    /// Second pass of the global gradient norm: result[0] = √(Σ partials[0 … partialCount)),
    /// result[1] = min(1, maxNorm / (norm + 10⁻⁶)), the factor of
    /// <c>torch.nn.utils.clip_grad_norm_</c> (1 when maxNorm is +∞). Pass result[1] to
    /// <see cref="AdamW"/> as its device-side gradient scale.
    /// </summary>
    /// <exception cref="ArgumentException">A non-positive count, maxNorm not positive, or short views.</exception>
    public void GlobalNorm(ArrayView<float> result, ArrayView<float> partials, int partialCount, float maxNorm = float.PositiveInfinity)
    {
        Require.Positive(partialCount, nameof(partialCount));
        if (!(maxNorm > 0))
            throw new ArgumentException($"maxNorm must be positive, got {maxNorm}.", nameof(maxNorm));
        Require.Holds(result, 2, nameof(result), "[2] (norm, clip factor)");
        Require.Holds(partials, partialCount, nameof(partials), $"[{partialCount}]");
        (result, partials) = (result.SubView(0, 2), partials.SubView(0, partialCount)); // overlap checks see the used ranges only
        Require.Distinct(result, nameof(result), partials, nameof(partials));
        finalNorm(device.Stream, new KernelConfig(1, groupSize), result, partials, partialCount, maxNorm);
    }

    public void Dispose()
    {
        partials.Dispose();
        columnScratch?.Dispose();
    }

    private static int ChunkOf(int count, int groups) => (int)(((long)count + groups - 1) / groups);

    /// <summary>The column-sum scratch, grown (never shrunk) when a larger shape first appears.</summary>
    private ArrayView<float> ColumnScratch(int length)
    {
        if (columnScratch is null || columnScratch.Length < length)
        {
            device.Synchronize(); // earlier launches may still use the old scratch
            columnScratch?.Dispose();
            columnScratch = device.Accelerator.Allocate1D<float>(length);
        }
        return columnScratch.View.SubView(0, length);
    }

    /// <summary>What the first pass sums: the element or its square.</summary>
    internal interface IElementMap
    {
        float Apply(float x);
    }

    internal readonly struct Identity : IElementMap
    {
        public float Apply(float x) => x;
    }

    internal readonly struct Square : IElementMap
    {
        public float Apply(float x) => x * x;
    }

    /// <summary>Column sums over rows [chunk·RowsPerChunk, …) of a [Rows, Columns] input; Accumulate adds to the output.</summary>
    internal readonly record struct ColumnShape(int Rows, int Columns, int RowsPerChunk, int Accumulate);

    // Group g sums input[g·chunk … (g+1)·chunk) into partials[g]; threads stride so loads coalesce.
    private static void PartialSumsKernel<TMap>(ArrayView<float> partials, ArrayView<float> input, int count, int chunk)
        where TMap : struct, IElementMap
    {
        var scratch = SharedMemory.Allocate<float>(GroupReduce.MaxGroupSize);
        var start = Grid.IdxX * chunk;
        var end = start + Math.Min(chunk, count - start);
        var sum = 0f;
        for (var i = start + Group.IdxX; i < end; i += Group.DimX)
            sum += default(TMap).Apply(input[i]);
        sum = GroupReduce.Sum(sum, scratch);
        if (Group.IdxX == 0)
            partials[Grid.IdxX] = sum;
    }

    // One group: the sum of partials[0 … count), each thread striding, then the tree.
    private static float SumOfPartials(ArrayView<float> partials, int count, ArrayView<float> scratch)
    {
        var sum = 0f;
        for (var i = Group.IdxX; i < count; i += Group.DimX)
            sum += partials[i];
        return GroupReduce.Sum(sum, scratch);
    }

    private static void FinalSumKernel(ArrayView<float> result, ArrayView<float> partials, int count)
    {
        var sum = SumOfPartials(partials, count, SharedMemory.Allocate<float>(GroupReduce.MaxGroupSize));
        if (Group.IdxX == 0)
            result[0] = sum;
    }

    private static void FinalNormKernel(ArrayView<float> result, ArrayView<float> partials, int count, float maxNorm)
    {
        var norm = MathF.Sqrt(SumOfPartials(partials, count, SharedMemory.Allocate<float>(GroupReduce.MaxGroupSize)));
        if (Group.IdxX == 0)
        {
            result[0] = norm;
            result[1] = MathF.Min(1f, maxNorm / (norm + 1e-6f));
        }
    }

    // One thread per (chunk, column): rows of the chunk in ascending order.
    private static void ColumnChunkSumsKernel(Index1D i, ArrayView<float> output, ArrayView<float> input, ColumnShape shape)
    {
        var chunk = i / shape.Columns;
        var column = i - chunk * shape.Columns;
        var start = chunk * shape.RowsPerChunk;
        var end = Math.Min(shape.Rows, start + shape.RowsPerChunk);
        var sum = 0f;
        for (var row = start; row < end; row++)
            sum += input[row * shape.Columns + column];
        output[i] = shape.Accumulate != 0 ? output[i] + sum : sum;
    }
}
