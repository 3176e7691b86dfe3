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
/// Scheme: a first pass of many groups writes partial sums (group g sums the
/// groupSize · 16 elements from g · groupSize · 16, each thread 16 of them strided by the
/// group size so loads coalesce, then <see cref="GroupReduce.Sum"/>); a second pass of one
/// group reduces the partials. Column sums are a 16-ary tree over the rows: each pass, one
/// thread per (column, block of 16 rows) adds its block in order. Loops have a constant trip
/// count, so CPU OpenCL compilers unroll them and vectorize across threads.
/// </para>
/// </summary>
public sealed class ReductionKernels : IKernelFamily<ReductionKernels>, IDisposable
{
    /// <summary>Elements one thread adds in the first pass of a vector reduction.</summary>
    private const int ElementsPerThread = 16;

    /// <summary>Rows one thread of the column sums adds per pass.</summary>
    private const int RowsPerBlock = 16;

    private readonly ComputeDevice device;
    private readonly int groupSize;
    private readonly ScratchBuffer<float> scratch;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int> partialSums;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int> partialSquares;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int> finalSum;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, float> finalNorm;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ColumnShape> columnBlocks;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<int>, ArrayView<float>, ArrayView<int>, ArgmaxShape> rowArgmax;
    private readonly int rowGroupSize;

    private ReductionKernels(ComputeDevice device)
    {
        this.device = device;
        scratch = new ScratchBuffer<float>(device);
        groupSize = device.Tuning.ElementGroupSize;
        if (!GroupReduce.IsValidGroupSize(groupSize))
            throw new ArgumentException($"ElementGroupSize {groupSize} must be a power of two ≤ {GroupReduce.MaxGroupSize}.", nameof(device));
        var accelerator = device.Accelerator;
        partialSums = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, int>(PartialSumsKernel<Identity>);
        partialSquares = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, int>(PartialSumsKernel<Square>);
        finalSum = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, int>(FinalSumKernel);
        finalNorm = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, int, float>(FinalNormKernel);
        columnBlocks = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ColumnShape>(ColumnBlockSumsKernel);
        rowGroupSize = RowGroup.Size(device);
        rowArgmax = accelerator.LoadKernel<ArrayView<int>, ArrayView<float>, ArrayView<int>, ArgmaxShape>(RowArgmaxKernel);
    }

    /// <inheritdoc/>
    public static ReductionKernels Create(ComputeDevice device) => new(device);

    /// <inheritdoc/>
    public static IEnumerable<KernelEntry> EntryPoints(KernelTuning tuning) =>
    [
        KernelEntry.Of(PartialSumsKernel<Identity>),
        KernelEntry.Of(PartialSumsKernel<Square>),
        KernelEntry.Of(FinalSumKernel),
        KernelEntry.Of(FinalNormKernel),
        KernelEntry.Of(ColumnBlockSumsKernel),
        KernelEntry.Of(RowArgmaxKernel),
    ];

    /// <summary>
    /// output[n] (+)= Σ_m input[m, n]: the bias gradient of a linear layer. A 16-ary tree over the
    /// rows: each pass sums blocks of 16 rows in order, until one row is left (⌈log₁₆ rows⌉ passes).
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
        // Passes alternate between two scratch regions: ⌈rows/16⌉ and ⌈rows/256⌉ rows of partial sums.
        var firstRows = BlocksOf(rows);
        var partialRows = rows > RowsPerBlock ? Scratch(ColumnSumsScratchLength(rows, columns)) : default;
        using var profile = device.Profile("Reduction", "column sums", 0, sizeof(float) * (double)count);
        var (source, sourceRows, useFirst) = (input, rows, true);
        while (sourceRows > RowsPerBlock)
        {
            var blocks = BlocksOf(sourceRows);
            var target = partialRows.SubView(useFirst ? 0 : firstRows * columns, blocks * columns);
            columnBlocks(device.Stream, RowGrid.Config(blocks, columns, groupSize), target, source, new ColumnShape(sourceRows, columns, 0));
            (source, sourceRows, useFirst) = (target, blocks, !useFirst);
        }
        columnBlocks(device.Stream, RowGrid.Config(1, columns, groupSize), output, source, new ColumnShape(sourceRows, columns, accumulate ? 1 : 0));
    }

    /// <summary>
    /// Floats of the family's scratch <see cref="ColumnSums"/> needs for [<paramref name="rows"/>,
    /// <paramref name="columns"/>]: the two regions of ⌈rows/16⌉ and ⌈rows/256⌉ rows of partial
    /// sums its passes alternate between (none for 16 rows or fewer).
    /// </summary>
    public static int ColumnSumsScratchLength(int rows, int columns)
    {
        if (rows <= RowsPerBlock)
            return 0;
        var firstRows = BlocksOf(rows);
        return (firstRows + BlocksOf(firstRows)) * columns;
    }

    private static int BlocksOf(int rows) => (rows + RowsPerBlock - 1) / RowsPerBlock;

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
        var partials = Scratch(groups);
        using var profile = device.Profile("Reduction", "sum", 0, sizeof(float) * (double)count);
        partialSums(device.Stream, new KernelConfig(groups, groupSize), partials, input, count);
        finalSum(device.Stream, new KernelConfig(1, groupSize), result, partials, groups);
    }

    /// <summary>
    /// How many partial slots <see cref="SumOfSquares"/> writes for a buffer of
    /// <paramref name="count"/> elements: ⌈count / (groupSize · 16)⌉ (groupSize is the device's
    /// ElementGroupSize); size the norm scratch as the sum over all parameter buffers.
    /// </summary>
    /// <exception cref="ArgumentException">A count below 1 or within one group of 2³¹.</exception>
    public int PartialCount(int count)
    {
        Require.Positive(count, nameof(count));
        var perGroup = groupSize * ElementsPerThread;
        if (count > int.MaxValue - perGroup)
            throw new ArgumentException($"count {count} is too close to 2³¹ for 32-bit indices.", nameof(count));
        return (count + perGroup - 1) / perGroup;
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
        using var profile = device.Profile("Reduction", "grad-norm squares", 0, sizeof(float) * (double)count);
        partialSquares(device.Stream, new KernelConfig(groups, groupSize), partials, input, count);
        return offset + groups;
    }

    /// <summary>
    /// Second pass of the global gradient norm: result[0] = √(Σ partials[0 … partialCount)),
    /// result[1] = min(1, maxNorm / (norm + 10⁻⁶)), the factor of
    /// <c>torch.nn.utils.clip_grad_norm_</c> (1 when maxNorm is +∞). Pass result[1] to
    /// <see cref="AdamWKernels"/> as its device-side gradient scale.
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
        using var profile = device.Profile("Reduction", "grad-norm final", 0, sizeof(float) * (double)partialCount);
        finalNorm(device.Stream, new KernelConfig(1, groupSize), result, partials, partialCount, maxNorm);
    }

    /// <summary>Most columns <see cref="RowArgmax"/> takes: column indices travel through the group reduction as floats, exact below 2²⁴.</summary>
    public const int MaxArgmaxColumns = 1 << 24;

    /// <summary>
    /// ids[r] = the column of the largest input[r, column], ties to the lowest column, with the
    /// columns listed in <paramref name="excluded"/> counted as −∞ (what the host's greedy
    /// choice does with its banned ids, so a row of all −∞ gives 0); −1 for a row holding a NaN.
    /// Greedy decoding reads back these 4 bytes per sequence instead of the logits.
    /// One group of <see cref="KernelTuning.RowGroupSize"/> threads per row (one work-item, a
    /// plain loop, on PoCL). // input [rows, columns], excluded [count] → ids [rows]
    /// </summary>
    /// <exception cref="ArgumentException">Non-positive sizes, more than <see cref="MaxArgmaxColumns"/> columns, or short views.</exception>
    public void RowArgmax(ArrayView<int> ids, ArrayView<float> input, int rows, int columns, ArrayView<int> excluded = default)
    {
        var count = Require.Product("input [rows, columns]", rows, columns);
        if (columns > MaxArgmaxColumns)
            throw new ArgumentException($"input [{rows}, {columns}] has more than {MaxArgmaxColumns} columns; the argmax carries column indices as floats.", nameof(columns));
        Require.Holds(ids, rows, nameof(ids), $"[{rows}]");
        Require.Holds(input, count, nameof(input), $"[{rows}, {columns}]");
        var excludedCount = excluded.IsValid ? (int)excluded.Length : 0;
        using var profile = device.Profile("Reduction", "row argmax", 0, sizeof(float) * (double)count);
        // With nothing excluded the kernel still needs a valid view: ids, never read then.
        rowArgmax(device.Stream, RowGroup.PerRow(rows, rowGroupSize), ids.SubView(0, rows), input.SubView(0, count),
            excludedCount > 0 ? excluded : ids, new ArgmaxShape(columns, excludedCount));
    }

    /// <inheritdoc/>
    public void Dispose() => scratch.Dispose();

    /// <summary>The family's scratch for partial sums (see <see cref="ScratchBuffer{T}"/>).</summary>
    private ArrayView<float> Scratch(int length) => scratch.View(length);

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

    /// <summary>Row length of a <see cref="RowArgmax"/> and how many excluded columns it lists.</summary>
    internal readonly record struct ArgmaxShape(int Columns, int Excluded);

    /// <summary>(value, column) of two parts of a row as that of the whole: the larger value, on a tie the lower column.</summary>
    internal readonly struct FirstMaximum : IPairReduction
    {
        /// <inheritdoc/>
        public void Combine(ref float a, ref float b, float a2, float b2)
        {
            if (a2 > a || (a2 == a && b2 < b))
                (a, b) = (a2, b2);
        }
    }

    /// <summary>Shape of one column-sum pass over a [Rows, Columns] input; Accumulate adds to the output.</summary>
    internal readonly record struct ColumnShape(int Rows, int Columns, int Accumulate);

    // Group g sums the groupSize·16 elements from g·groupSize·16 into partials[g]; thread t takes
    // every groupSize-th of them from t, so a warp's loads coalesce.
    private static void PartialSumsKernel<TMap>(ArrayView<float> partials, ArrayView<float> input, int count)
        where TMap : struct, IElementMap
    {
        var scratch = SharedMemory.Allocate<float>(GroupReduce.MaxGroupSize);
        var first = Grid.IdxX * Group.DimX * ElementsPerThread + Group.IdxX;
        var sum = 0f;
        for (var k = 0; k < ElementsPerThread; k++)
        {
            var i = first + k * Group.DimX;
            if (i < count)
                sum += default(TMap).Apply(input[i]);
        }
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

    // One thread per (column, block of 16 rows): the block's rows in ascending order; neighbouring
    // threads read neighbouring columns. Rows past the end of a ragged last block add nothing.
    private static void ColumnBlockSumsKernel(ArrayView<float> output, ArrayView<float> input, ColumnShape shape)
    {
        var (block, column) = (RowGrid.Row, RowGrid.Column);
        if (column >= shape.Columns)
            return;
        var start = block * RowsPerBlock;
        var sum = 0f;
        for (var r = 0; r < RowsPerBlock; r++)
        {
            if (start + r < shape.Rows)
                sum += input[(start + r) * shape.Columns + column];
        }
        var target = block * shape.Columns + column;
        output[target] = shape.Accumulate != 0 ? output[target] + sum : sum;
    }

    // Group r, row r: each thread keeps the first maximum of the columns it strides over (a NaN
    // ends its scan as (+∞, −1), which wins every comparison), then FirstMaximum over the group.
    // A thread starts at (−∞, its first column), so a row of −∞ gives column 0 as the host's scan does.
    private static void RowArgmaxKernel(ArrayView<int> ids, ArrayView<float> input, ArrayView<int> excluded, ArgmaxShape shape)
    {
        var scratch = SharedMemory.Allocate<float>(4 * GroupReduce.MaxGroupSize);
        var row = Grid.IdxX;
        var values = input.SubView((long)row * shape.Columns, shape.Columns);
        var best = float.NegativeInfinity;
        var bestColumn = Group.IdxX;
        for (var column = Group.IdxX; column < shape.Columns; column += Group.DimX)
        {
            var value = values[column];
            for (var e = 0; e < shape.Excluded; e++)
            {
                if (excluded[e] == column)
                    value = float.NegativeInfinity;
            }
            if (float.IsNaN(value))
            {
                (best, bestColumn) = (float.PositiveInfinity, -1);
                break;
            }
            if (value > best)
                (best, bestColumn) = (value, column);
        }
        var (_, winner) = GroupReduce.Pairs<FirstMaximum>(best, bestColumn, scratch);
        if (Group.IdxX == 0)
            ids[row] = (int)winner;
    }
}
