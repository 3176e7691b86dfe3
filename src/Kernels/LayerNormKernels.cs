using System.Numerics;
using System.Runtime.CompilerServices;
using GpuTransformer.Kernels.Backends;
using ILGPU;
using ILGPU.Runtime;
using RowRegister = GpuTransformer.Kernels.VectorPair<GpuTransformer.Kernels.VectorPair<GpuTransformer.Kernels.Float4>>;

namespace GpuTransformer.Kernels;

/// <summary>
/// Layer normalisation over the last dimension of [N, C] with a learned scale γ and shift β
/// (PyTorch <c>nn.LayerNorm(C)</c>, <c>elementwise_affine=True</c>, biased variance), and its backward.
/// <para>
/// Forward: one group per row, two passes over the row for the statistics — Σ(x − x₀) for
/// the mean (x₀ the row's first element, so the rounding of the sum scales with the row's
/// spread, not its magnitude: rows around 1000 ± 1 keep their digits), then Σ(x − mean)² for
/// the biased variance (never E[x²] − E[x]²) — each reduced with <see cref="GroupReduce"/>,
/// then a third pass writes y. The re-reads of a row hit the cache on a GPU (a 4 KiB row per
/// group); the simple sums vectorise on PoCL, where a per-element Welford update (a division
/// in a loop-carried chain) measured about 2× slower.
/// </para>
/// <para>
/// Backward: three launches. (1) dγ/dβ partial sums: a 2-D grid of (chunk of
/// <see cref="ParameterGradientChunkRows"/> rows × column block); each thread owns one column and adds its
/// chunk's rows in order into <c>scratch</c> [chunks, 2, C] — coalesced, no atomics; for
/// N = 16k, C = 1024 that is 512 chunks × 4 column blocks = 2048 groups of 256 threads,
/// enough to fill a GPU (one thread per column looping over all N rows would be 1024
/// threads with 16k dependent steps each: latency-bound). (2) One group per
/// parameter column sums its chunks with <see cref="GroupReduce"/> into dγ/dβ (added to
/// them when accumulating); the group is no wider than the chunk count (a power of two). (3) dx, one group per row. The order of every sum is fixed, so
/// dγ/dβ are bitwise reproducible for a given shape and tuning. Cost: x and dy come from
/// memory twice (partials, dx) — 5 row-sized transfers per row instead of the 3 a fused kernel
/// with per-group shared-memory partials could reach; that fusion needs a compile-time
/// bound on C: GPUs (below) have it.
/// </para>
/// <para>
/// GPUs (<see cref="RowTile.Vector256"/>, C ≤ 4096) keep rows in registers: the forward reads
/// x once (mean and variance from registers, each sum one radix-8 tree); the backward is one
/// kernel per chunk of <see cref="ParameterGradientChunkRows"/> rows that reads x and dy once,
/// writes dx and, from the same registers, the chunk's dγ/dβ partials (each thread owning its
/// 16 columns across the chunk's rows, in row order: the same partials as above), then the
/// sums kernel. 3 row-sized transfers per row instead of 5.
/// </para>
/// <para>
/// PoCL (<see cref="RowTile.CpuLanes"/>): the forward and the dx kernel run one work-item per
/// row, the sums 8 columns at a time (<see cref="Lanes8"/>) and the writes as plain loops, so
/// LLVM vectorises them; dγ/dβ as above.
/// </para>
/// </summary>
public sealed class LayerNormKernels : IKernelFamily<LayerNormKernels>
{
    /// <summary>Rows per dγ/dβ partial sum; fixes the summation order (and the scratch size) independently of the device.</summary>
    internal const int ParameterGradientChunkRows = 32;

    // The partials kernel has no barriers, so its column block need not be the row group:
    // at least this many columns, so that a row group of 1 (PoCL) does not mean N·C/32 tiny groups
    // (on PoCL 64 columns measured about 3× faster than 1 and 1.5× faster than 32).
    private const int MinimumColumnBlock = 64;

    private readonly ComputeDevice device;
    private readonly int groupSize;
    private readonly int columnBlock;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float> forward;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int> backwardInput;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int> parameterPartials;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int> parameterSums;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float>[]? registerForward; // scalar, vector access
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>[]? registerBackward;
    private readonly bool lanes; // RowTile.CpuLanes: forward and backwardInput are the Lanes kernels

    private LayerNormKernels(ComputeDevice device)
    {
        this.device = device;
        groupSize = RowGroup.Size(device);
        columnBlock = Math.Max(groupSize, Math.Min(MinimumColumnBlock, device.Description.MaxGroupSize));
        var accelerator = device.Accelerator;
        lanes = device.Tuning.RowTile == RowTile.CpuLanes;
        forward = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float>(
            lanes ? LanesForwardKernel : ForwardKernel);
        backwardInput = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int>(
            lanes ? LanesBackwardInputKernel : BackwardInputKernel);
        parameterPartials = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(ParameterPartialsKernel);
        parameterSums = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>(ParameterSumsKernel);
        if (RowGroup.UsesRegisters(device))
        {
            registerForward =
            [
                accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float>(RegisterForwardKernel<ScalarAccess>),
                accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float>(RegisterForwardKernel<VectorAccess>),
            ];
            registerBackward =
            [
                accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(RegisterBackwardKernel<ScalarAccess>),
                accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(RegisterBackwardKernel<VectorAccess>),
            ];
        }
    }

    /// <inheritdoc/>
    public static LayerNormKernels Create(ComputeDevice device) => new(device);

    /// <inheritdoc/>
    public static IEnumerable<KernelEntry> EntryPoints(KernelTuning tuning)
    {
        ArgumentNullException.ThrowIfNull(tuning);
        var lanes = tuning.RowTile == RowTile.CpuLanes;
        List<KernelEntry> entries =
        [
            lanes ? KernelEntry.Of(LanesForwardKernel) : KernelEntry.Of(ForwardKernel),
            lanes ? KernelEntry.Of(LanesBackwardInputKernel) : KernelEntry.Of(BackwardInputKernel),
            KernelEntry.Of(ParameterPartialsKernel),
            KernelEntry.Of(ParameterSumsKernel),
        ];
        if (tuning.RowTile == RowTile.Vector256)
        {
            entries.AddRange(
            [
                KernelEntry.Of(RegisterForwardKernel<ScalarAccess>), KernelEntry.Of(RegisterForwardKernel<VectorAccess>),
                KernelEntry.Of(RegisterBackwardKernel<ScalarAccess>), KernelEntry.Of(RegisterBackwardKernel<VectorAccess>),
            ]);
        }
        return entries;
    }

    /// <summary>Floats of scratch <see cref="Backward"/> needs for [<paramref name="rows"/>, <paramref name="columns"/>]: 2·C·⌈N / 32⌉ (about N·C/16).</summary>
    public static int BackwardScratchLength(int rows, int columns)
    {
        Require.Positive(rows, nameof(rows));
        Require.Positive(columns, nameof(columns));
        return Require.Product("layernorm scratch [chunks, 2, columns]", ChunkCount(rows), 2, columns);
    }

    /// <summary>
    /// y = (x − mean)·rstd·γ + β per row, rstd = 1/√(var + eps) with the biased variance;
    /// saves mean and rstd for the backward. <paramref name="output"/> may be <paramref name="input"/>.
    /// </summary>
    /// <param name="output">y [N, C].</param>
    /// <param name="mean">Row means [N] (saved for the backward).</param>
    /// <param name="rstd">Row 1/√(var + eps) [N] (saved for the backward).</param>
    /// <param name="input">x [N, C].</param>
    /// <param name="gamma">γ [C].</param>
    /// <param name="beta">β [C].</param>
    /// <param name="rows">N (tokens).</param>
    /// <param name="columns">C (model width).</param>
    /// <param name="eps">Added to the variance; positive and finite (PyTorch's default 1e-5).</param>
    /// <exception cref="ArgumentException">A size or eps is not positive, a view is too short, or views overlap.</exception>
    public void Forward(
        ArrayView<float> output, ArrayView<float> mean, ArrayView<float> rstd,
        ArrayView<float> input, ArrayView<float> gamma, ArrayView<float> beta,
        int rows, int columns, float eps = 1e-5f)
    {
        var shape = CheckShape(rows, columns);
        if (!(eps > 0f) || !float.IsFinite(eps))
            throw new ArgumentException($"LayerNorm eps must be positive and finite, got {eps}.", nameof(eps));
        var count = rows * columns;
        Require.Holds(output, count, nameof(output), shape);
        Require.Holds(mean, rows, nameof(mean), $"[{rows}]");
        Require.Holds(rstd, rows, nameof(rstd), $"[{rows}]");
        Require.Holds(input, count, nameof(input), shape);
        Require.Holds(gamma, columns, nameof(gamma), $"[{columns}]");
        Require.Holds(beta, columns, nameof(beta), $"[{columns}]");
        Require.SameOrDisjoint(output, nameof(output), input, nameof(input));
        RowGroup.Disjoint(output, nameof(output), (gamma, nameof(gamma)), (beta, nameof(beta)), (mean, nameof(mean)), (rstd, nameof(rstd)));
        RowGroup.Disjoint(mean, nameof(mean), (input, nameof(input)), (gamma, nameof(gamma)), (beta, nameof(beta)), (rstd, nameof(rstd)));
        RowGroup.Disjoint(rstd, nameof(rstd), (input, nameof(input)), (gamma, nameof(gamma)), (beta, nameof(beta)));
        using var profile = device.Profile("LayerNorm", "forward", 0, 2.0 * sizeof(float) * count);
        if (registerForward is not null && columns <= RowRegisters.MaxColumns)
        {
            registerForward[RowRegisters.Aligned(columns, output, input, gamma, beta) ? 1 : 0](
                device.Stream, RowGroup.PerRow(rows, RowRegisters.Threads), output, mean, rstd, input, gamma, beta, columns, eps);
            return;
        }
        forward(device.Stream, RowGroup.PerRow(rows, lanes ? 1 : groupSize), output, mean, rstd, input, gamma, beta, columns, eps);
    }

    /// <summary>
    /// Backward of <see cref="Forward"/>: with x̂ = (x − mean)·rstd and g = dy·γ,
    /// dx = rstd·(g − mean_C(g) − x̂·mean_C(g·x̂)); dγ = Σ_N dy·x̂ and dβ = Σ_N dy, summed in a
    /// fixed order (see the class remarks). <paramref name="dInput"/> may be
    /// <paramref name="dOutput"/> or <paramref name="input"/> (in place).
    /// </summary>
    /// <param name="dInput">dx [N, C].</param>
    /// <param name="dGamma">dγ [C]: overwritten, or added to when <paramref name="accumulateParameterGradients"/>.</param>
    /// <param name="dBeta">dβ [C]: overwritten, or added to when <paramref name="accumulateParameterGradients"/>.</param>
    /// <param name="scratch">Work space of at least <see cref="BackwardScratchLength"/> floats; its contents are not needed afterwards.</param>
    /// <param name="dOutput">dy [N, C].</param>
    /// <param name="input">x [N, C] as given to the forward.</param>
    /// <param name="gamma">γ [C].</param>
    /// <param name="mean">Row means [N] from the forward.</param>
    /// <param name="rstd">Row rstd [N] from the forward.</param>
    /// <param name="rows">N.</param>
    /// <param name="columns">C.</param>
    /// <param name="accumulateParameterGradients">Add into dγ/dβ (gradient accumulation over micro-batches) instead of overwriting them.</param>
    /// <exception cref="ArgumentException">A size is not positive, a view is too short, or views overlap where that would race.</exception>
    public void Backward(
        ArrayView<float> dInput, ArrayView<float> dGamma, ArrayView<float> dBeta, ArrayView<float> scratch,
        ArrayView<float> dOutput, ArrayView<float> input, ArrayView<float> gamma, ArrayView<float> mean, ArrayView<float> rstd,
        int rows, int columns, bool accumulateParameterGradients = false)
    {
        var shape = CheckShape(rows, columns);
        var count = rows * columns;
        var scratchLength = BackwardScratchLength(rows, columns);
        Require.Holds(dInput, count, nameof(dInput), shape);
        Require.Holds(dGamma, columns, nameof(dGamma), $"[{columns}]");
        Require.Holds(dBeta, columns, nameof(dBeta), $"[{columns}]");
        Require.Holds(scratch, scratchLength, nameof(scratch), $"[{ChunkCount(rows)}, 2, {columns}] (BackwardScratchLength)");
        Require.Holds(dOutput, count, nameof(dOutput), shape);
        Require.Holds(input, count, nameof(input), shape);
        Require.Holds(gamma, columns, nameof(gamma), $"[{columns}]");
        Require.Holds(mean, rows, nameof(mean), $"[{rows}]");
        Require.Holds(rstd, rows, nameof(rstd), $"[{rows}]");
        Require.SameOrDisjoint(dInput, nameof(dInput), dOutput, nameof(dOutput));
        Require.SameOrDisjoint(dInput, nameof(dInput), input, nameof(input));
        RowGroup.Disjoint(dInput, nameof(dInput), (gamma, nameof(gamma)), (mean, nameof(mean)), (rstd, nameof(rstd)));
        // dγ, dβ and the scratch are written by other launches than the reads of dy, x, …: no aliasing at all.
        RowGroup.Disjoint(
            dGamma, nameof(dGamma), (dBeta, nameof(dBeta)), (scratch, nameof(scratch)), (dInput, nameof(dInput)), (dOutput, nameof(dOutput)),
            (input, nameof(input)), (gamma, nameof(gamma)), (mean, nameof(mean)), (rstd, nameof(rstd)));
        RowGroup.Disjoint(
            dBeta, nameof(dBeta), (scratch, nameof(scratch)), (dInput, nameof(dInput)), (dOutput, nameof(dOutput)),
            (input, nameof(input)), (gamma, nameof(gamma)), (mean, nameof(mean)), (rstd, nameof(rstd)));
        RowGroup.Disjoint(
            scratch, nameof(scratch), (dInput, nameof(dInput)), (dOutput, nameof(dOutput)),
            (input, nameof(input)), (gamma, nameof(gamma)), (mean, nameof(mean)), (rstd, nameof(rstd)));

        // No more threads per parameter column than there are chunks to add.
        using var profile = device.Profile("LayerNorm", "backward", 0, 5.0 * sizeof(float) * count);
        var sumGroup = Math.Min(groupSize, (int)BitOperations.RoundUpToPowerOf2((uint)ChunkCount(rows)));
        if (registerBackward is not null && columns <= RowRegisters.MaxColumns)
        {
            // dx and the partials in one pass (each row's x and dy are in registers before its dx is written).
            registerBackward[RowRegisters.Aligned(columns, dInput, dOutput, input, gamma, scratch) ? 1 : 0](
                device.Stream, new KernelConfig(ChunkCount(rows), RowRegisters.Threads),
                dInput, scratch, dOutput, input, gamma, mean, rstd, rows, columns);
            parameterSums(
                device.Stream, RowGroup.PerRow(2 * columns, sumGroup),
                dGamma, dBeta, scratch, ChunkCount(rows), columns, accumulateParameterGradients ? 1 : 0);
            return;
        }

        // dγ/dβ first: they read dy and x, which dx may overwrite.
        var columnBlocks = (columns + columnBlock - 1) / columnBlock;
        parameterPartials(
            device.Stream, new KernelConfig(new Index2D(ChunkCount(rows), columnBlocks), new Index2D(columnBlock, 1)),
            scratch, dOutput, input, mean, rstd, rows, columns);
        parameterSums(
            device.Stream, RowGroup.PerRow(2 * columns, sumGroup),
            dGamma, dBeta, scratch, ChunkCount(rows), columns, accumulateParameterGradients ? 1 : 0);
        backwardInput(device.Stream, RowGroup.PerRow(rows, lanes ? 1 : groupSize), dInput, dOutput, input, gamma, mean, rstd, columns);
    }

    private static int ChunkCount(int rows) => (rows + ParameterGradientChunkRows - 1) / ParameterGradientChunkRows;

    private static string CheckShape(int rows, int columns)
    {
        Require.Positive(rows, nameof(rows));
        Require.Positive(columns, nameof(columns));
        Require.Product("layernorm input [rows, columns]", rows, columns);
        Require.Product("layernorm parameter gradients [2, columns]", 2, columns);
        return $"[{rows}, {columns}]";
    }

    // [N, C]: one group per row.
    private static void ForwardKernel(
        ArrayView<float> output, ArrayView<float> mean, ArrayView<float> rstd,
        ArrayView<float> input, ArrayView<float> gamma, ArrayView<float> beta, int columns, float eps)
    {
        var scratch = SharedMemory.Allocate<float>(GroupReduce.MaxGroupSize);
        var row = Grid.IdxX;
        var start = row * columns;
        // Sums of x − x₀ stay near the spread of the row rather than its magnitude.
        var shift = input[start];

        var sum = 0f;
        for (var c = Group.IdxX; c < columns; c += Group.DimX)
            sum += input[start + c] - shift;
        var shiftedMean = GroupReduce.Sum(sum, scratch) / columns;
        var squares = 0f;
        for (var c = Group.IdxX; c < columns; c += Group.DimX)
        {
            var d = input[start + c] - shift - shiftedMean;
            squares += d * d;
        }
        var inverseStd = 1f / MathF.Sqrt(GroupReduce.Sum(squares, scratch) / columns + eps);

        if (Group.IdxX == 0)
        {
            mean[row] = shift + shiftedMean;
            rstd[row] = inverseStd;
        }
        // Every read of the row happened before the barriers above: in place is safe.
        for (var c = Group.IdxX; c < columns; c += Group.DimX)
            output[start + c] = (input[start + c] - shift - shiftedMean) * inverseStd * gamma[c] + beta[c];
    }

    // [N, C]: one group per row.
    private static void BackwardInputKernel(
        ArrayView<float> dInput, ArrayView<float> dOutput, ArrayView<float> input,
        ArrayView<float> gamma, ArrayView<float> mean, ArrayView<float> rstd, int columns)
    {
        var scratch = SharedMemory.Allocate<float>(GroupReduce.MaxGroupSize);
        var row = Grid.IdxX;
        var start = row * columns;
        var rowMean = mean[row];
        var inverseStd = rstd[row];

        var sumG = 0f;
        var sumGX = 0f;
        for (var c = Group.IdxX; c < columns; c += Group.DimX)
        {
            var g = dOutput[start + c] * gamma[c];
            sumG += g;
            sumGX += g * (input[start + c] - rowMean) * inverseStd;
        }
        var meanG = GroupReduce.Sum(sumG, scratch) / columns;
        var meanGX = GroupReduce.Sum(sumGX, scratch) / columns;

        for (var c = Group.IdxX; c < columns; c += Group.DimX)
        {
            var g = dOutput[start + c] * gamma[c];
            var normalized = (input[start + c] - rowMean) * inverseStd;
            dInput[start + c] = inverseStd * (g - meanG - normalized * meanGX);
        }
    }

    // [N, C]: one work-item per row (RowTile.CpuLanes, RowLanes.cs): the two sums 8 lanes at a
    // time, the output a plain loop. Same contract as ForwardKernel.
    private static void LanesForwardKernel(
        ArrayView<float> output, ArrayView<float> mean, ArrayView<float> rstd,
        ArrayView<float> input, ArrayView<float> gamma, ArrayView<float> beta, int columns, float eps)
    {
        var row = Grid.IdxX;
        var start = row * columns;
        var lanes = columns - columns % 8;
        var shift = input[start];
        var shift8 = Lanes8.Splat(shift);
        var sum8 = Lanes8.Splat(0f);
        for (var c = 0; c < lanes; c += 8)
            sum8 += Lanes8.Load(input, start + c) - shift8;
        var sum = sum8.Sum;
        for (var c = lanes; c < columns; c++)
            sum += input[start + c] - shift;
        var shiftedMean = sum / columns;

        var shiftedMean8 = Lanes8.Splat(shiftedMean);
        var squares8 = Lanes8.Splat(0f);
        for (var c = 0; c < lanes; c += 8)
        {
            var d = Lanes8.Load(input, start + c) - shift8 - shiftedMean8;
            squares8 += d * d;
        }
        var squares = squares8.Sum;
        for (var c = lanes; c < columns; c++)
        {
            var d = input[start + c] - shift - shiftedMean;
            squares += d * d;
        }
        var inverseStd = 1f / MathF.Sqrt(squares / columns + eps);
        mean[row] = shift + shiftedMean;
        rstd[row] = inverseStd;
        for (var c = 0; c < columns; c++)
            output[start + c] = (input[start + c] - shift - shiftedMean) * inverseStd * gamma[c] + beta[c];
    }

    // [N, C]: one work-item per row (RowTile.CpuLanes, RowLanes.cs). Same contract as BackwardInputKernel.
    private static void LanesBackwardInputKernel(
        ArrayView<float> dInput, ArrayView<float> dOutput, ArrayView<float> input,
        ArrayView<float> gamma, ArrayView<float> mean, ArrayView<float> rstd, int columns)
    {
        var row = Grid.IdxX;
        var start = row * columns;
        var rowMean = mean[row];
        var inverseStd = rstd[row];
        var lanes = columns - columns % 8;
        var mean8 = Lanes8.Splat(rowMean);
        var inverseStd8 = Lanes8.Splat(inverseStd);
        var sumG8 = Lanes8.Splat(0f);
        var sumGX8 = Lanes8.Splat(0f);
        for (var c = 0; c < lanes; c += 8)
        {
            var g = Lanes8.Load(dOutput, start + c) * Lanes8.Load(gamma, c);
            sumG8 += g;
            sumGX8 += g * (Lanes8.Load(input, start + c) - mean8) * inverseStd8;
        }
        var sumG = sumG8.Sum;
        var sumGX = sumGX8.Sum;
        for (var c = lanes; c < columns; c++)
        {
            var g = dOutput[start + c] * gamma[c];
            sumG += g;
            sumGX += g * (input[start + c] - rowMean) * inverseStd;
        }
        var meanG = sumG / columns;
        var meanGX = sumGX / columns;
        for (var c = 0; c < columns; c++)
        {
            var g = dOutput[start + c] * gamma[c];
            var normalized = (input[start + c] - rowMean) * inverseStd;
            dInput[start + c] = inverseStd * (g - meanG - normalized * meanGX);
        }
    }

    // Grid (row chunks, column blocks) — chunks along X, which has no 65535 limit on CUDA;
    // partials [chunks, 2, C]: [k, 0, c] = Σ dy·x̂, [k, 1, c] = Σ dy over chunk k.
    private static void ParameterPartialsKernel(
        ArrayView<float> partials, ArrayView<float> dOutput, ArrayView<float> input,
        ArrayView<float> mean, ArrayView<float> rstd, int rows, int columns)
    {
        var column = Grid.IdxY * Group.DimX + Group.IdxX;
        if (column >= columns)
            return;
        var chunk = Grid.IdxX;
        var first = chunk * ParameterGradientChunkRows;
        var sumGamma = 0f;
        var sumBeta = 0f;
        // A constant trip count (the last chunk guards its rows) lets the compilers unroll:
        // more loads in flight on a GPU, and on PoCL the work-item loop becomes the inner,
        // vectorisable one.
        for (var i = 0; i < ParameterGradientChunkRows; i++)
        {
            var r = first + i;
            if (r < rows)
            {
                var dy = dOutput[r * columns + column];
                sumGamma += dy * (input[r * columns + column] - mean[r]) * rstd[r];
                sumBeta += dy;
            }
        }
        partials[chunk * 2 * columns + column] = sumGamma;
        partials[chunk * 2 * columns + columns + column] = sumBeta;
    }

    // One group per parameter column j ∈ [0, 2C): j < C is dγ[j], else dβ[j − C].
    private static void ParameterSumsKernel(
        ArrayView<float> dGamma, ArrayView<float> dBeta, ArrayView<float> partials, int chunks, int columns, int accumulate)
    {
        var scratch = SharedMemory.Allocate<float>(GroupReduce.MaxGroupSize);
        var j = Grid.IdxX;
        var sum = 0f;
        for (var k = Group.IdxX; k < chunks; k += Group.DimX)
            sum += partials[k * 2 * columns + j];
        sum = GroupReduce.Sum(sum, scratch);
        if (Group.IdxX != 0)
            return;
        if (j < columns)
            dGamma[j] = accumulate != 0 ? dGamma[j] + sum : sum;
        else
            dBeta[j - columns] = accumulate != 0 ? dBeta[j - columns] + sum : sum;
    }

    // [N, C ≤ 4096]: one 256-thread group per row, the row in registers (RowRegisters).
    private static void RegisterForwardKernel<TAccess>(
        ArrayView<float> output, ArrayView<float> mean, ArrayView<float> rstd,
        ArrayView<float> input, ArrayView<float> gamma, ArrayView<float> beta, int columns, float eps)
        where TAccess : struct, IGlobalAccess
    {
        var scratch = SharedMemory.Allocate<float>(RowRegisters.Scratch);
        var row = Grid.IdxX;
        var start = row * columns;
        var x = RowRegisters.Load<RowRegister, TAccess>(input, start, columns);
        // Sums of x − x₀ stay near the spread of the row rather than its magnitude.
        var shift = input[start];

        var sum = new ShiftedSums(shift, 0f, columns);
        x.Visit(ref sum, 0, RowRegisters.FirstColumn, RowRegisters.Threads);
        var shiftedMean = GroupReduce.Pairs<TwoSums>(sum.Sum, 0f, scratch).A / columns;
        var squares = new ShiftedSums(shift, shiftedMean, columns);
        x.Visit(ref squares, 0, RowRegisters.FirstColumn, RowRegisters.Threads);
        var inverseStd = 1f / MathF.Sqrt(GroupReduce.Pairs<TwoSums>(squares.Squares, 0f, scratch).A / columns + eps);

        if (Group.IdxX == 0)
        {
            mean[row] = shift + shiftedMean;
            rstd[row] = inverseStd;
        }
        // Every read of the row happened before the barriers above: in place is safe.
        var write = new Normalized<TAccess>(output, gamma, beta, start, columns, shift + shiftedMean, inverseStd);
        x.Visit(ref write, 0, RowRegisters.FirstColumn, RowRegisters.Threads);
    }

    // Grid: one 256-thread group per chunk of ParameterGradientChunkRows rows of [N, C ≤ 4096];
    // writes dx of its rows and partials [chunks, 2, C] ([k, 0, c] = Σ dy·x̂, [k, 1, c] = Σ dy).
    private static void RegisterBackwardKernel<TAccess>(
        ArrayView<float> dInput, ArrayView<float> partials, ArrayView<float> dOutput, ArrayView<float> input,
        ArrayView<float> gamma, ArrayView<float> mean, ArrayView<float> rstd, int rows, int columns)
        where TAccess : struct, IGlobalAccess
    {
        var scratch = SharedMemory.Allocate<float>(RowRegisters.Scratch);
        var chunk = Grid.IdxX;
        var first = chunk * ParameterGradientChunkRows;
        var last = Math.Min(rows, first + ParameterGradientChunkRows);
        var g = RowRegisters.Load<RowRegister, TAccess>(gamma, 0, columns);
        var dGamma = default(RowRegister);
        var dBeta = default(RowRegister);
        for (var row = first; row < last; row++)
        {
            var start = row * columns;
            var dy = RowRegisters.Load<RowRegister, TAccess>(dOutput, start, columns);
            var normalized = RowRegisters.Load<RowRegister, TAccess>(input, start, columns);
            var inverseStd = rstd[row];
            var normalize = new Normalize(mean[row], inverseStd);
            normalized.Map(ref normalize, normalized, 0, RowRegisters.FirstColumn, RowRegisters.Threads);

            // dγ += dy·x̂ and dβ += dy for this thread's columns, rows in order.
            var product = dy;
            var multiply = default(Multiply);
            product.Map(ref multiply, normalized, 0, RowRegisters.FirstColumn, RowRegisters.Threads);
            var add = default(Add);
            dGamma.Map(ref add, product, 0, RowRegisters.FirstColumn, RowRegisters.Threads);
            dBeta.Map(ref add, dy, 0, RowRegisters.FirstColumn, RowRegisters.Threads);

            // g = dy·γ; dx = rstd·(g − mean(g) − x̂·mean(g·x̂)).
            var scaled = dy;
            scaled.Map(ref multiply, g, 0, RowRegisters.FirstColumn, RowRegisters.Threads);
            var sums = new GradientSums(columns);
            scaled.Map(ref sums, normalized, 0, RowRegisters.FirstColumn, RowRegisters.Threads);
            var (sumG, sumGX) = GroupReduce.Pairs<TwoSums>(sums.G, sums.GX, scratch);
            var write = new InputGradient<TAccess>(dInput, start, columns, inverseStd, sumG / columns, sumGX / columns);
            scaled.Map(ref write, normalized, 0, RowRegisters.FirstColumn, RowRegisters.Threads);
        }
        var partialGamma = new Partials<TAccess>(partials, chunk * 2 * columns, columns);
        dGamma.Visit(ref partialGamma, 0, RowRegisters.FirstColumn, RowRegisters.Threads);
        var partialBeta = new Partials<TAccess>(partials, chunk * 2 * columns + columns, columns);
        dBeta.Visit(ref partialBeta, 0, RowRegisters.FirstColumn, RowRegisters.Threads);
    }

    /// <summary>A thread's Σ (x − shift) and Σ (x − shift − mean)² over the row's columns.</summary>
    private struct ShiftedSums(float shift, float mean, int columns) : IFloat4Visitor
    {
        public float Sum;
        public float Squares;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Visit(int row, int column, Float4 value)
        {
            Add(column, value.X);
            Add(column + 1, value.Y);
            Add(column + 2, value.Z);
            Add(column + 3, value.W);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private void Add(int column, float x)
        {
            if (column >= columns)
                return;
            Sum += x - shift;
            var d = x - shift - mean;
            Squares += d * d;
        }
    }

    /// <summary>Writes (x − mean)·rstd·γ + β.</summary>
    private readonly struct Normalized<TAccess>(ArrayView<float> output, ArrayView<float> gamma, ArrayView<float> beta, int start, int columns, float mean, float inverseStd) : IFloat4Visitor
        where TAccess : struct, IGlobalAccess
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Visit(int row, int column, Float4 value)
        {
            var g = RowRegisters.Read<TAccess>(gamma, 0, column, columns);
            var b = RowRegisters.Read<TAccess>(beta, 0, column, columns);
            RowRegisters.Write<TAccess>(output, start, column, columns, new Float4(
                (value.X - mean) * inverseStd * g.X + b.X,
                (value.Y - mean) * inverseStd * g.Y + b.Y,
                (value.Z - mean) * inverseStd * g.Z + b.Z,
                (value.W - mean) * inverseStd * g.W + b.W));
        }
    }

    /// <summary>x̂ = (x − mean)·rstd.</summary>
    private readonly struct Normalize(float mean, float inverseStd) : IFloat4Mapper
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Float4 Map(int row, int column, Float4 value, Float4 other) => new(
            (value.X - mean) * inverseStd, (value.Y - mean) * inverseStd, (value.Z - mean) * inverseStd, (value.W - mean) * inverseStd);
    }

    private readonly struct Multiply : IFloat4Mapper
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Float4 Map(int row, int column, Float4 value, Float4 other) =>
            new(value.X * other.X, value.Y * other.Y, value.Z * other.Z, value.W * other.W);
    }

    private readonly struct Add : IFloat4Mapper
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Float4 Map(int row, int column, Float4 value, Float4 other) =>
            new(value.X + other.X, value.Y + other.Y, value.Z + other.Z, value.W + other.W);
    }

    /// <summary>A thread's Σ g and Σ g·x̂ (g the row, x̂ the other) over the row's columns; columns past C hold zeros.</summary>
    private struct GradientSums(int columns) : IFloat4Mapper
    {
        public float G;
        public float GX;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Float4 Map(int row, int column, Float4 value, Float4 other)
        {
            if (column < columns)
            {
                G += value.X + value.Y + value.Z + value.W;
                GX += value.X * other.X + value.Y * other.Y + value.Z * other.Z + value.W * other.W;
            }
            return value;
        }
    }

    /// <summary>Writes dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) (g the row, x̂ the other).</summary>
    private readonly struct InputGradient<TAccess>(ArrayView<float> dInput, int start, int columns, float inverseStd, float meanG, float meanGX) : IFloat4Mapper
        where TAccess : struct, IGlobalAccess
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Float4 Map(int row, int column, Float4 value, Float4 other)
        {
            RowRegisters.Write<TAccess>(dInput, start, column, columns, new Float4(
                inverseStd * (value.X - meanG - other.X * meanGX),
                inverseStd * (value.Y - meanG - other.Y * meanGX),
                inverseStd * (value.Z - meanG - other.Z * meanGX),
                inverseStd * (value.W - meanG - other.W * meanGX)));
            return value;
        }
    }

    /// <summary>Writes a row of partial sums at <paramref name="start"/>.</summary>
    private readonly struct Partials<TAccess>(ArrayView<float> partials, int start, int columns) : IFloat4Visitor
        where TAccess : struct, IGlobalAccess
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Visit(int row, int column, Float4 value) => RowRegisters.Write<TAccess>(partials, start, column, columns, value);
    }
}
