using GpuTransformer.Kernels.Backends;
using ILGPU;
using ILGPU.Runtime;

namespace GpuTransformer.Kernels;

/// <summary>Options of <see cref="SoftmaxKernels"/>: input scale and causal mask.</summary>
public sealed record SoftmaxOptions
{
    /// <summary>No scale, no mask.</summary>
    public static SoftmaxOptions Default { get; } = new();

    /// <summary>Factor applied to the input before the softmax (1/√d for unfused attention scores). Must be finite.</summary>
    public float Scale { get; init; } = 1f;

    /// <summary>
    /// Causal mask: the rows are [..., <see cref="QueryLength"/>] queries over the columns as
    /// keys; row r is query i = r mod <see cref="QueryLength"/>, and column j is masked when
    /// j &gt; i + <see cref="CausalOffset"/>.
    /// </summary>
    public bool Causal { get; init; }

    /// <summary>Queries per sequence, Tq (needed when <see cref="Causal"/>; the row count must be a multiple of it).</summary>
    public int QueryLength { get; init; }

    /// <summary>
    /// Shift of the diagonal, as in the attention kernels: 0 is PyTorch's
    /// <c>triu(ones(Tq, Tk), 1)</c> mask; Tk − Tq lets the last query see every key (queries
    /// appended after a cache). Negative values mask whole rows: those rows come out as zeros.
    /// </summary>
    public int CausalOffset { get; init; }

    /// <summary>A causal mask for <paramref name="queryLength"/> queries per sequence.</summary>
    public static SoftmaxOptions CausalMask(int queryLength, int causalOffset = 0, float scale = 1f) =>
        new() { Causal = true, QueryLength = queryLength, CausalOffset = causalOffset, Scale = scale };
}

/// <summary>
/// Row-wise softmax over [R, C] and its backward, numerically stable (the row maximum is
/// subtracted), with an optional input scale and causal mask. Masked entries come out as 0;
/// a row with nothing left (fully masked, or all −∞) is all zeros.
/// <para>
/// One group of <see cref="KernelTuning.RowGroupSize"/> threads per row, threads striding
/// over the columns. The forward reads the row twice (a streaming max/sum pass, then the
/// write pass) and writes it once; the backward likewise reads y and dy twice and writes dx
/// once. Both reduce with <see cref="GroupReduce"/>, so results are deterministic.
/// </para>
/// </summary>
public sealed class SoftmaxKernels : IKernelFamily<SoftmaxKernels>
{
    private readonly ComputeDevice device;
    private readonly int groupSize;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, float, int, int> forward;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float, int, int> backward;

    private SoftmaxKernels(ComputeDevice device)
    {
        this.device = device;
        groupSize = RowGroup.Size(device);
        var accelerator = device.Accelerator;
        forward = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, int, float, int, int>(ForwardKernel);
        backward = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float, int, int>(BackwardKernel);
    }

    /// <inheritdoc/>
    public static SoftmaxKernels Create(ComputeDevice device) => new(device);

    /// <inheritdoc/>
    public static IEnumerable<KernelEntry> EntryPoints(KernelTuning tuning) =>
    [
        KernelEntry.Of(ForwardKernel),
        KernelEntry.Of(BackwardKernel),
    ];

    /// <summary>
    /// y = softmax(scale · x) over each row of [<paramref name="rows"/>, <paramref name="columns"/>],
    /// masked as <paramref name="options"/> says. <paramref name="output"/> may be <paramref name="input"/> (in place).
    /// </summary>
    /// <param name="output">y [R, C].</param>
    /// <param name="input">x [R, C].</param>
    /// <param name="rows">R (for attention: B·H·Tq).</param>
    /// <param name="columns">C (for attention: Tk).</param>
    /// <param name="options">Scale and mask; null: none.</param>
    /// <exception cref="ArgumentException">A size is not positive, a view is too short or partially overlaps, or the options do not fit the shape.</exception>
    public void Forward(ArrayView<float> output, ArrayView<float> input, int rows, int columns, SoftmaxOptions? options = null)
    {
        var mask = Check(options, rows, columns, out var scale);
        var shape = $"[{rows}, {columns}]";
        var count = rows * columns;
        Require.Holds(output, count, nameof(output), shape);
        Require.Holds(input, count, nameof(input), shape);
        Require.SameOrDisjoint(output, nameof(output), input, nameof(input));
        forward(device.Stream, RowGroup.PerRow(rows, groupSize), output, input, columns, scale, mask.QueryLength, mask.Offset);
    }

    /// <summary>
    /// dx = scale · y ∘ (dy − Σ_j dy_j·y_j) per row, 0 at masked entries: the gradient with
    /// respect to the <see cref="Forward"/> input for the same <paramref name="options"/>.
    /// <paramref name="dInput"/> may be <paramref name="dOutput"/> or <paramref name="output"/> (in place).
    /// </summary>
    /// <param name="dInput">dx [R, C].</param>
    /// <param name="output">y [R, C] from the forward.</param>
    /// <param name="dOutput">dy [R, C].</param>
    /// <param name="rows">R.</param>
    /// <param name="columns">C.</param>
    /// <param name="options">The forward's options; null: none.</param>
    /// <exception cref="ArgumentException">A size is not positive, a view is too short or partially overlaps, or the options do not fit the shape.</exception>
    public void Backward(ArrayView<float> dInput, ArrayView<float> output, ArrayView<float> dOutput, int rows, int columns, SoftmaxOptions? options = null)
    {
        var mask = Check(options, rows, columns, out var scale);
        var shape = $"[{rows}, {columns}]";
        var count = rows * columns;
        Require.Holds(dInput, count, nameof(dInput), shape);
        Require.Holds(output, count, nameof(output), shape);
        Require.Holds(dOutput, count, nameof(dOutput), shape);
        Require.SameOrDisjoint(dInput, nameof(dInput), output, nameof(output));
        Require.SameOrDisjoint(dInput, nameof(dInput), dOutput, nameof(dOutput));
        backward(device.Stream, RowGroup.PerRow(rows, groupSize), dInput, output, dOutput, columns, scale, mask.QueryLength, mask.Offset);
    }

    private static (int QueryLength, int Offset) Check(SoftmaxOptions? options, int rows, int columns, out float scale)
    {
        options ??= SoftmaxOptions.Default;
        Require.Positive(rows, nameof(rows));
        Require.Positive(columns, nameof(columns));
        Require.Product("softmax input [rows, columns]", rows, columns);
        if (!float.IsFinite(options.Scale))
            throw new ArgumentException($"Softmax scale must be finite, got {options.Scale}.", nameof(options));
        scale = options.Scale;
        if (!options.Causal)
            return (0, 0);
        if (options.QueryLength <= 0 || rows % options.QueryLength != 0)
        {
            throw new ArgumentException(
                $"A causal softmax over [{rows}, {columns}] needs QueryLength ≥ 1 dividing the rows ([..., Tq] queries), got {options.QueryLength}.",
                nameof(options));
        }
        return (options.QueryLength, options.CausalOffset);
    }

    // [R, C]: one group per row.
    private static void ForwardKernel(ArrayView<float> output, ArrayView<float> input, int columns, float scale, int queryLength, int causalOffset)
    {
        var scratch = SharedMemory.Allocate<float>(GroupReduce.MaxGroupSize);
        var row = Grid.IdxX;
        var start = row * columns;
        var limit = VisibleColumns(row, columns, queryLength, causalOffset);

        var max = float.NegativeInfinity;
        var sum = 0f;
        for (var c = Group.IdxX; c < limit; c += Group.DimX)
            RowGroup.Fold(scale * input[start + c], ref max, ref sum);
        var stats = RowGroup.Combine(max, sum, scratch);

        // Every read of the row happened before the barriers above: in place is safe.
        var live = stats.IsEmpty ? 0 : limit;
        var inverse = 1f / stats.Sum;
        for (var c = Group.IdxX; c < live; c += Group.DimX)
            output[start + c] = MathF.Exp(scale * input[start + c] - stats.Max) * inverse;
        for (var c = live + Group.IdxX; c < columns; c += Group.DimX)
            output[start + c] = 0f;
    }

    // [R, C]: one group per row.
    private static void BackwardKernel(ArrayView<float> dInput, ArrayView<float> output, ArrayView<float> dOutput, int columns, float scale, int queryLength, int causalOffset)
    {
        var scratch = SharedMemory.Allocate<float>(GroupReduce.MaxGroupSize);
        var row = Grid.IdxX;
        var start = row * columns;
        var limit = VisibleColumns(row, columns, queryLength, causalOffset);

        var dot = 0f;
        for (var c = Group.IdxX; c < limit; c += Group.DimX)
            dot += dOutput[start + c] * output[start + c];
        dot = GroupReduce.Sum(dot, scratch);

        for (var c = Group.IdxX; c < limit; c += Group.DimX)
            dInput[start + c] = scale * output[start + c] * (dOutput[start + c] - dot);
        for (var c = limit + Group.IdxX; c < columns; c += Group.DimX)
            dInput[start + c] = 0f;
    }

    // Row r sees columns [0, result): query i = r mod Tq sees keys j ≤ i + offset; queryLength 0 means no mask.
    private static int VisibleColumns(int row, int columns, int queryLength, int causalOffset)
    {
        if (queryLength == 0)
            return columns;
        var query = row % queryLength;
        // Compared before adding, so that offsets near int.MaxValue cannot overflow.
        return causalOffset >= columns - 1 - query ? columns : Math.Max(0, query + causalOffset + 1);
    }
}
