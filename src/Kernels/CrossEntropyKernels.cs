using System.Runtime.CompilerServices;
using GpuTransformer.Kernels.Backends;
using ILGPU;
using ILGPU.Runtime;

namespace GpuTransformer.Kernels;

/// <summary>Options of <see cref="CrossEntropyKernels"/>, as PyTorch's <c>F.cross_entropy</c> names them.</summary>
public sealed record CrossEntropyOptions
{
    /// <summary>PyTorch's default <c>ignore_index</c>.</summary>
    public const int DefaultIgnoreIndex = -100;

    /// <summary>Ignore index −100, no label smoothing.</summary>
    public static CrossEntropyOptions Default { get; } = new();

    /// <summary>
    /// Rows whose target equals this are ignored (loss 0, gradient 0, not counted by
    /// <see cref="CrossEntropyKernels.MeanLoss"/>). Every negative target is ignored as well, whatever this is.
    /// </summary>
    public int IgnoreIndex { get; init; } = DefaultIgnoreIndex;

    /// <summary>
    /// ε of PyTorch's <c>label_smoothing</c> (the paper uses 0.1), in [0, 1): the target
    /// distribution is (1 − ε)·onehot + ε/V.
    /// </summary>
    public float LabelSmoothing { get; init; }
}

/// <summary>
/// Fused softmax + cross-entropy over logits [N, V] with integer targets [N] (PyTorch
/// <c>F.cross_entropy(logits, targets, ignore_index, label_smoothing, reduction='none')</c>),
/// its gradient, and the mean over the counted rows.
/// <para>
/// Per row, with lse = log Σ_j exp z_j:
/// loss = lse − (1 − ε)·z_t − (ε/V)·Σ_j z_j, and
/// dlogits = (softmax(z) − (1 − ε)·onehot(t) − ε/V)·gradScale.
/// Ignored rows (t &lt; 0 or t = IgnoreIndex) give loss 0 and gradient 0. A target ≥ V cannot
/// be reported from a kernel without a host sync: such a row gets a NaN loss and a NaN
/// gradient so that training notices — callers should validate token ids on the host when
/// they build a batch.
/// </para>
/// <para>
/// One group per row, threads striding over the vocabulary: one streaming pass for the
/// max/Σexp (and Σz when smoothing) and, for the gradient, one more pass that reads z and
/// writes dlogits — which may be the logits buffer itself (<see cref="ForwardBackward"/>
/// in place saves N·V floats). Reductions use <see cref="GroupReduce"/>: deterministic.
/// </para>
/// <para>
/// GPUs (<see cref="RowTile.Vector256"/>): 256 threads stream the row in 128-bit loads (when
/// rows start 16-byte aligned) and reduce (max, Σexp) in one radix-8 tree.
/// </para>
/// <para>
/// PoCL (<see cref="RowTile.CpuLanes"/>): one work-item per row; the max (and Σz) and the
/// Σexp run 8 columns at a time (<see cref="Lanes8"/>), the exps and the gradient are plain
/// loops over the row: LLVM vectorises all of them.
/// </para>
/// </summary>
public sealed class CrossEntropyKernels : IKernelFamily<CrossEntropyKernels>
{
    private readonly ComputeDevice device;
    private readonly int groupSize;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, float, float, int> rowKernel;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int> mean;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, float, float, int>[]? vectorRowKernel; // scalar, vector access
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, float, float, int>[]? lanesRowKernel; // separate, dlogits over logits

    private CrossEntropyKernels(ComputeDevice device)
    {
        this.device = device;
        groupSize = RowGroup.Size(device);
        var accelerator = device.Accelerator;
        rowKernel = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, float, float, int>(RowKernel);
        mean = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int>(MeanKernel);
        if (RowGroup.UsesRegisters(device))
        {
            vectorRowKernel =
            [
                accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, float, float, int>(VectorRowKernel<ScalarAccess>),
                accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, float, float, int>(VectorRowKernel<VectorAccess>),
            ];
        }
        if (device.Tuning.RowTile == RowTile.CpuLanes)
        {
            lanesRowKernel =
            [
                accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, float, float, int>(LanesRowKernel<SeparateViews>),
                accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, float, float, int>(LanesRowKernel<SameView>),
            ];
        }
    }

    /// <inheritdoc/>
    public static CrossEntropyKernels Create(ComputeDevice device) => new(device);

    /// <inheritdoc/>
    public static IEnumerable<KernelEntry> EntryPoints(KernelTuning tuning)
    {
        ArgumentNullException.ThrowIfNull(tuning);
        List<KernelEntry> entries = [KernelEntry.Of(RowKernel), KernelEntry.Of(MeanKernel)];
        if (tuning.RowTile == RowTile.Vector256)
            entries.AddRange([KernelEntry.Of(VectorRowKernel<ScalarAccess>), KernelEntry.Of(VectorRowKernel<VectorAccess>)]);
        if (tuning.RowTile == RowTile.CpuLanes)
            entries.AddRange([KernelEntry.Of(LanesRowKernel<SeparateViews>), KernelEntry.Of(LanesRowKernel<SameView>)]);
        return entries;
    }

    /// <summary>One launch of the row kernel (strided, lanes on PoCL, or vectorised on GPUs) over [rows, vocabulary].</summary>
    private void LaunchRows(
        ArrayView<float> losses, ArrayView<float> logSumExp, ArrayView<float> dLogits, ArrayView<float> logits, ArrayView<int> targets,
        int rows, int vocabulary, CrossEntropyOptions options, float gradScale, int writes)
    {
        using var profile = device.Profile("CrossEntropy", (writes & WriteGradient) == 0 ? "rows" : "rows + gradient",
            0, sizeof(float) * (double)rows * vocabulary * ((writes & WriteGradient) == 0 ? 1 : 2));
        if (lanesRowKernel is not null)
        {
            var inPlace = (writes & WriteGradient) != 0 && Require.Overlap(dLogits, logits);
            lanesRowKernel[inPlace ? 1 : 0](device.Stream, RowGroup.PerRow(rows, 1),
                losses, logSumExp, dLogits, logits, targets, vocabulary, options.IgnoreIndex, options.LabelSmoothing, gradScale, writes);
            return;
        }
        if (vectorRowKernel is null)
        {
            rowKernel(device.Stream, RowGroup.PerRow(rows, groupSize),
                losses, logSumExp, dLogits, logits, targets, vocabulary, options.IgnoreIndex, options.LabelSmoothing, gradScale, writes);
            return;
        }
        var aligned = RowRegisters.Aligned(vocabulary, logits) && ((writes & WriteGradient) == 0 || RowRegisters.Aligned(vocabulary, dLogits));
        vectorRowKernel[aligned ? 1 : 0](device.Stream, RowGroup.PerRow(rows, RowRegisters.Threads),
            losses, logSumExp, dLogits, logits, targets, vocabulary, options.IgnoreIndex, options.LabelSmoothing, gradScale, writes);
    }

    /// <summary>Per-row losses (reduction='none').</summary>
    /// <param name="losses">Loss per row [N]: 0 for ignored rows, NaN for a target ≥ V.</param>
    /// <param name="logits">z [N, V].</param>
    /// <param name="targets">Target ids [N].</param>
    /// <param name="rows">N (tokens).</param>
    /// <param name="vocabulary">V.</param>
    /// <param name="options">Ignore index and label smoothing; null: PyTorch's defaults.</param>
    /// <exception cref="ArgumentException">A size is not positive, a view is too short or overlaps another, or the options are out of range.</exception>
    public void Forward(ArrayView<float> losses, ArrayView<float> logits, ArrayView<int> targets, int rows, int vocabulary, CrossEntropyOptions? options = null) =>
        Forward(losses, default, logits, targets, rows, vocabulary, options);

    /// <summary>Per-row losses (reduction='none') and each row's log-sum-exp.</summary>
    /// <param name="losses">Loss per row [N]: 0 for ignored rows, NaN for a target ≥ V.</param>
    /// <param name="logSumExp">log Σ_j exp z_j per row [N] (0 for ignored rows, NaN for a target ≥ V); an empty view skips it.</param>
    /// <param name="logits">z [N, V].</param>
    /// <param name="targets">Target ids [N].</param>
    /// <param name="rows">N (tokens).</param>
    /// <param name="vocabulary">V.</param>
    /// <param name="options">Ignore index and label smoothing; null: PyTorch's defaults.</param>
    /// <exception cref="ArgumentException">A size is not positive, a view is too short or overlaps another, or the options are out of range.</exception>
    public void Forward(
        ArrayView<float> losses, ArrayView<float> logSumExp, ArrayView<float> logits, ArrayView<int> targets,
        int rows, int vocabulary, CrossEntropyOptions? options = null)
    {
        options = Check(options, logits, targets, rows, vocabulary);
        Require.Holds(losses, rows, nameof(losses), $"[{rows}]");
        RowGroup.Disjoint(losses, nameof(losses), (logits, nameof(logits)));
        var writeLse = logSumExp.IsValid && logSumExp.Length > 0;
        if (writeLse)
        {
            Require.Holds(logSumExp, rows, nameof(logSumExp), $"[{rows}]");
            RowGroup.Disjoint(logSumExp, nameof(logSumExp), (losses, nameof(losses)), (logits, nameof(logits)));
        }
        LaunchRows(losses, writeLse ? logSumExp : losses, logits, logits, targets, rows, vocabulary, options, 0f, WriteLoss | (writeLse ? WriteLogSumExp : 0));
    }

    /// <summary>
    /// dlogits = (softmax(z) − (1 − ε)·onehot(t) − ε/V)·<paramref name="gradScale"/> per row,
    /// 0 for ignored rows. <paramref name="dLogits"/> may be <paramref name="logits"/> (in place).
    /// </summary>
    /// <param name="dLogits">dL/dz [N, V].</param>
    /// <param name="logits">z [N, V].</param>
    /// <param name="targets">Target ids [N].</param>
    /// <param name="rows">N.</param>
    /// <param name="vocabulary">V.</param>
    /// <param name="gradScale">dL/dloss_n for every counted row: 1 / (number of counted rows) for the mean reduction.</param>
    /// <param name="options">Ignore index and label smoothing; null: PyTorch's defaults.</param>
    /// <exception cref="ArgumentException">A size is not positive, a view is too short or partially overlaps, gradScale is not finite, or the options are out of range.</exception>
    public void Backward(
        ArrayView<float> dLogits, ArrayView<float> logits, ArrayView<int> targets,
        int rows, int vocabulary, float gradScale, CrossEntropyOptions? options = null)
    {
        options = Check(options, logits, targets, rows, vocabulary);
        CheckGradient(dLogits, logits, rows, vocabulary, gradScale);
        LaunchRows(dLogits, dLogits, dLogits, logits, targets, rows, vocabulary, options, gradScale, WriteGradient);
    }

    /// <summary>
    /// <see cref="Forward(ArrayView{float}, ArrayView{float}, ArrayView{int}, int, int, CrossEntropyOptions?)"/> and <see cref="Backward"/> in one launch (the row is read for the
    /// statistics once and then once more for the gradient). <paramref name="dLogits"/> may be
    /// <paramref name="logits"/>: the logits are then replaced by their gradient.
    /// </summary>
    /// <param name="losses">Loss per row [N] (see <see cref="Forward(ArrayView{float}, ArrayView{float}, ArrayView{int}, int, int, CrossEntropyOptions?)"/>).</param>
    /// <param name="dLogits">dL/dz [N, V].</param>
    /// <param name="logits">z [N, V].</param>
    /// <param name="targets">Target ids [N].</param>
    /// <param name="rows">N.</param>
    /// <param name="vocabulary">V.</param>
    /// <param name="gradScale">dL/dloss_n for every counted row.</param>
    /// <param name="options">Ignore index and label smoothing; null: PyTorch's defaults.</param>
    /// <exception cref="ArgumentException">A size is not positive, a view is too short or overlaps, gradScale is not finite, or the options are out of range.</exception>
    public void ForwardBackward(
        ArrayView<float> losses, ArrayView<float> dLogits, ArrayView<float> logits, ArrayView<int> targets,
        int rows, int vocabulary, float gradScale, CrossEntropyOptions? options = null)
    {
        options = Check(options, logits, targets, rows, vocabulary);
        CheckGradient(dLogits, logits, rows, vocabulary, gradScale);
        Require.Holds(losses, rows, nameof(losses), $"[{rows}]");
        RowGroup.Disjoint(losses, nameof(losses), (logits, nameof(logits)), (dLogits, nameof(dLogits)));
        LaunchRows(losses, losses, dLogits, logits, targets, rows, vocabulary, options, gradScale, WriteLoss | WriteGradient);
    }

    /// <summary>
    /// The mean loss over the counted (not ignored) rows, on the device (no host sync):
    /// Σ losses / count, one group summing in a fixed order. NaN when every row is ignored
    /// (as PyTorch) or when a row has a target ≥ V. The count is kept in float: exact up to 2^24 rows per thread.
    /// </summary>
    /// <param name="result">One float: the mean.</param>
    /// <param name="losses">Per-row losses [N] from <see cref="Forward(ArrayView{float}, ArrayView{float}, ArrayView{int}, int, int, CrossEntropyOptions?)"/> or <see cref="ForwardBackward"/>.</param>
    /// <param name="targets">The targets [N] they were computed for.</param>
    /// <param name="rows">N.</param>
    /// <param name="options">The ignore index used; null: PyTorch's default.</param>
    /// <exception cref="ArgumentException">rows is not positive or a view is too short.</exception>
    public void MeanLoss(ArrayView<float> result, ArrayView<float> losses, ArrayView<int> targets, int rows, CrossEntropyOptions? options = null)
    {
        options ??= CrossEntropyOptions.Default;
        Require.Positive(rows, nameof(rows));
        Require.Holds(result, 1, nameof(result), "[1]");
        Require.Holds(losses, rows, nameof(losses), $"[{rows}]");
        Require.Holds(targets, rows, nameof(targets), $"[{rows}]");
        RowGroup.Disjoint(result, nameof(result), (losses, nameof(losses)));
        using var profile = device.Profile("CrossEntropy", "mean", 0, 2.0 * sizeof(float) * rows);
        mean(device.Stream, new KernelConfig(1, groupSize), result, losses, targets, rows, options.IgnoreIndex);
    }

    private static CrossEntropyOptions Check(CrossEntropyOptions? options, ArrayView<float> logits, ArrayView<int> targets, int rows, int vocabulary)
    {
        options ??= CrossEntropyOptions.Default;
        Require.Positive(rows, nameof(rows));
        Require.Positive(vocabulary, nameof(vocabulary));
        var shape = $"[{rows}, {vocabulary}]";
        var count = Require.Product("logits [rows, vocabulary]", rows, vocabulary);
        Require.Holds(logits, count, nameof(logits), shape);
        Require.Holds(targets, rows, nameof(targets), $"[{rows}]");
        if (!(options.LabelSmoothing >= 0f && options.LabelSmoothing < 1f))
            throw new ArgumentException($"Label smoothing must be in [0, 1), got {options.LabelSmoothing}.", nameof(options));
        return options;
    }

    private static void CheckGradient(ArrayView<float> dLogits, ArrayView<float> logits, int rows, int vocabulary, float gradScale)
    {
        Require.Holds(dLogits, rows * vocabulary, nameof(dLogits), $"[{rows}, {vocabulary}]");
        Require.SameOrDisjoint(dLogits, nameof(dLogits), logits, nameof(logits));
        if (!float.IsFinite(gradScale))
            throw new ArgumentException($"gradScale must be finite, got {gradScale}.", nameof(gradScale));
    }

    // What a launch of RowKernel writes (a uniform flag: one kernel serves the three entry points).
    private const int WriteLoss = 1, WriteLogSumExp = 2, WriteGradient = 4;

    // logits [N, V], targets [N]: one group per row. Views that `writes` leaves out are dummies.
    private static void RowKernel(
        ArrayView<float> losses, ArrayView<float> logSumExp, ArrayView<float> dLogits, ArrayView<float> logits, ArrayView<int> targets,
        int vocabulary, int ignoreIndex, float smoothing, float gradScale, int writes)
    {
        var scratch = SharedMemory.Allocate<float>(GroupReduce.MaxGroupSize);
        var writesLoss = (writes & WriteLoss) != 0;
        var writesLogSumExp = (writes & WriteLogSumExp) != 0;
        var writesGradient = (writes & WriteGradient) != 0;
        var row = Grid.IdxX;
        var start = row * vocabulary;
        var target = targets[row];

        // The same branch for the whole group (one row): no barrier is skipped by part of it.
        if (SkippedRow(losses, logSumExp, dLogits, row, start, target, vocabulary, ignoreIndex, writes))
            return;

        // Read before the barriers below, hence before any thread overwrites the row in place.
        var targetLogit = logits[start + target];

        // Three passes with one exp per logit (the profile on PoCL, where a group is one
        // work-item looping over the row, showed the exps bound it): the max; Σ exp(z − max),
        // parking each exp in dLogits when the gradient is wanted; then the gradient from them.
        // Each thread reads back only the columns it wrote itself, so in place is safe.
        var max = float.NegativeInfinity;
        var sumLogits = 0f;
        for (var c = Group.IdxX; c < vocabulary; c += Group.DimX)
        {
            var z = logits[start + c];
            max = z > max ? z : max;
            sumLogits += z;
        }
        var rowMax = GroupReduce.Max(max, scratch);
        var shift = rowMax == float.NegativeInfinity ? 0f : rowMax; // an all −∞ row: every exp is 0
        var sum = 0f;
        for (var c = Group.IdxX; c < vocabulary; c += Group.DimX)
        {
            var e = MathF.Exp(logits[start + c] - shift);
            sum += e;
            if (writesGradient)
                dLogits[start + c] = e;
        }
        var rowSum = GroupReduce.Sum(sum, scratch);
        var logSum = MathF.Log(rowSum);

        if (writesLoss)
        {
            var meanLogit = smoothing > 0f ? GroupReduce.Sum(sumLogits, scratch) / vocabulary : 0f;
            StoreLoss(losses, logSumExp, row, writesLogSumExp, Loss(smoothing, rowMax, logSum, targetLogit, meanLogit), rowMax + logSum);
        }

        if (writesGradient)
        {
            var inverse = 1f / rowSum;
            var uniform = smoothing / vocabulary;
            for (var c = Group.IdxX; c < vocabulary; c += Group.DimX)
            {
                var q = c == target ? 1f - smoothing + uniform : uniform;
                dLogits[start + c] = (dLogits[start + c] * inverse - q) * gradScale;
            }
        }
    }

    // logits [N, V], targets [N]: one work-item per row (RowLanes.cs); SameView: dlogits over
    // the logits. Same contract as RowKernel.
    private static void LanesRowKernel<TPlacement>(
        ArrayView<float> losses, ArrayView<float> logSumExp, ArrayView<float> dLogits, ArrayView<float> logits, ArrayView<int> targets,
        int vocabulary, int ignoreIndex, float smoothing, float gradScale, int writes)
        where TPlacement : struct, IRowPlacement
    {
        if (default(TPlacement).Aliased)
            logits = dLogits;
        var writesLoss = (writes & WriteLoss) != 0;
        var writesLogSumExp = (writes & WriteLogSumExp) != 0;
        var writesGradient = (writes & WriteGradient) != 0;
        var row = Grid.IdxX;
        var start = row * vocabulary;
        var target = targets[row];
        if (SkippedRow(losses, logSumExp, dLogits, row, start, target, vocabulary, ignoreIndex, writes))
            return;

        // Read before the row may be overwritten in place.
        var targetLogit = logits[start + target];
        var lanes = vocabulary - vocabulary % 8;
        var max8 = Lanes8.Splat(float.NegativeInfinity);
        var sumLogits8 = Lanes8.Splat(0f);
        for (var c = 0; c < lanes; c += 8)
        {
            var z = Lanes8.Load(logits, start + c);
            max8 = Lanes8.Max(z, max8);
            sumLogits8 += z;
        }
        var rowMax = max8.Max8;
        var sumLogits = sumLogits8.Sum;
        for (var c = lanes; c < vocabulary; c++)
        {
            var z = logits[start + c];
            rowMax = z > rowMax ? z : rowMax;
            sumLogits += z;
        }
        var shift = rowMax == float.NegativeInfinity ? 0f : rowMax; // an all −∞ row: every exp is 0

        // Σ exp(z − max): with the gradient, the exps are parked in dLogits (a plain loop) and
        // summed from there; without, exped and summed 8 lanes at a time.
        float rowSum;
        if (writesGradient)
        {
            for (var c = 0; c < vocabulary; c++)
                dLogits[start + c] = LaneMath.Exp(logits[start + c] - shift);
            rowSum = Lanes8.SumOf(dLogits, start, vocabulary);
        }
        else
        {
            var shift8 = Lanes8.Splat(shift);
            var sum8 = Lanes8.Splat(0f);
            for (var c = 0; c < lanes; c += 8)
                sum8 += Lanes8.Exp(Lanes8.Load(logits, start + c) - shift8);
            rowSum = sum8.Sum;
            for (var c = lanes; c < vocabulary; c++)
                rowSum += LaneMath.Exp(logits[start + c] - shift);
        }
        var logSum = MathF.Log(rowSum);

        if (writesLoss)
        {
            var meanLogit = smoothing > 0f ? sumLogits / vocabulary : 0f;
            StoreLoss(losses, logSumExp, row, writesLogSumExp, Loss(smoothing, rowMax, logSum, targetLogit, meanLogit), rowMax + logSum);
        }

        if (writesGradient)
        {
            var inverse = 1f / rowSum;
            var uniform = smoothing / vocabulary;
            for (var c = 0; c < vocabulary; c++)
                dLogits[start + c] = (dLogits[start + c] * inverse - uniform) * gradScale;
            var targetExp = LaneMath.Exp(targetLogit - shift);
            dLogits[start + target] = (targetExp * inverse - (1f - smoothing + uniform)) * gradScale;
        }
    }

    // logits [N, V], targets [N]: one 256-thread group per row, 128-bit groups of the row strided
    // over the threads (RowRegisters' access rules). Same contract as RowKernel.
    private static void VectorRowKernel<TAccess>(
        ArrayView<float> losses, ArrayView<float> logSumExp, ArrayView<float> dLogits, ArrayView<float> logits, ArrayView<int> targets,
        int vocabulary, int ignoreIndex, float smoothing, float gradScale, int writes)
        where TAccess : struct, IGlobalAccess
    {
        var scratch = SharedMemory.Allocate<float>(RowRegisters.Scratch);
        var writesLoss = (writes & WriteLoss) != 0;
        var writesLogSumExp = (writes & WriteLogSumExp) != 0;
        var writesGradient = (writes & WriteGradient) != 0;
        var row = Grid.IdxX;
        var start = row * vocabulary;
        var target = targets[row];
        var stride = 4 * RowRegisters.Threads;

        // The same branch for the whole group (one row): no barrier is skipped by part of it.
        var ignored = target < 0 || target == ignoreIndex;
        if (ignored || target >= vocabulary)
        {
            var value = ignored ? 0f : float.NaN;
            if (writesLoss)
                StoreLoss(losses, logSumExp, row, writesLogSumExp, value, value);
            if (writesGradient)
            {
                for (var c = RowRegisters.FirstColumn; c < vocabulary; c += stride)
                    RowRegisters.Write<TAccess>(dLogits, start, c, vocabulary, new Float4(value, value, value, value));
            }
            return;
        }

        // Read before the barriers below, hence before any thread overwrites the row in place.
        var targetLogit = logits[start + target];
        var max = float.NegativeInfinity;
        var sum = 0f;
        var sumLogits = 0f;
        for (var c = RowRegisters.FirstColumn; c < vocabulary; c += stride)
        {
            var z = RowRegisters.Read<TAccess>(logits, start, c, vocabulary);
            Fold(c, vocabulary, z.X, ref max, ref sum, ref sumLogits);
            Fold(c + 1, vocabulary, z.Y, ref max, ref sum, ref sumLogits);
            Fold(c + 2, vocabulary, z.Z, ref max, ref sum, ref sumLogits);
            Fold(c + 3, vocabulary, z.W, ref max, ref sum, ref sumLogits);
        }
        var (rowMax, rowSum) = GroupReduce.Pairs<MaxAndExpSum>(max, sum, scratch);
        var logSum = MathF.Log(rowSum);

        if (writesLoss)
        {
            var meanLogit = smoothing > 0f ? GroupReduce.Pairs<TwoSums>(sumLogits, 0f, scratch).A / vocabulary : 0f;
            StoreLoss(losses, logSumExp, row, writesLogSumExp, Loss(smoothing, rowMax, logSum, targetLogit, meanLogit), rowMax + logSum);
        }

        if (writesGradient)
        {
            var inverse = 1f / rowSum;
            var uniform = smoothing / vocabulary;
            for (var c = RowRegisters.FirstColumn; c < vocabulary; c += stride)
            {
                var z = RowRegisters.Read<TAccess>(logits, start, c, vocabulary);
                RowRegisters.Write<TAccess>(dLogits, start, c, vocabulary, new Float4(
                    Gradient(z.X, c, target, rowMax, inverse, smoothing, uniform, gradScale),
                    Gradient(z.Y, c + 1, target, rowMax, inverse, smoothing, uniform, gradScale),
                    Gradient(z.Z, c + 2, target, rowMax, inverse, smoothing, uniform, gradScale),
                    Gradient(z.W, c + 3, target, rowMax, inverse, smoothing, uniform, gradScale)));
            }
        }
    }

    // A row whose target is ignored (loss and gradient 0) or ≥ V (NaN): writes what `writes` asks
    // for, the gradient row strided over the group, and says whether the row was one.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool SkippedRow(
        ArrayView<float> losses, ArrayView<float> logSumExp, ArrayView<float> dLogits,
        int row, int start, int target, int vocabulary, int ignoreIndex, int writes)
    {
        var ignored = target < 0 || target == ignoreIndex;
        if (!ignored && target < vocabulary)
            return false;
        var value = ignored ? 0f : float.NaN;
        if ((writes & WriteLoss) != 0)
            StoreLoss(losses, logSumExp, row, (writes & WriteLogSumExp) != 0, value, value);
        if ((writes & WriteGradient) != 0)
        {
            for (var c = Group.IdxX; c < vocabulary; c += Group.DimX)
                dLogits[start + c] = value;
        }
        return true;
    }

    // lse − (1 − ε)·z_t − ε·mean(z), with lse = max + log Σ exp(z − max) kept apart for precision.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Loss(float smoothing, float max, float logSum, float targetLogit, float meanLogit) =>
        (1f - smoothing) * (max - targetLogit) + smoothing * (max - meanLogit) + logSum;

    // The row's loss (and log-sum-exp), by the group's first thread.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreLoss(ArrayView<float> losses, ArrayView<float> logSumExp, int row, bool writesLogSumExp, float loss, float lse)
    {
        if (Group.IdxX != 0)
            return;
        losses[row] = loss;
        if (writesLogSumExp)
            logSumExp[row] = lse;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Fold(int column, int vocabulary, float z, ref float max, ref float sum, ref float sumLogits)
    {
        if (column >= vocabulary)
            return;
        RowGroup.Fold(z, ref max, ref sum);
        sumLogits += z;
    }

    // (softmax − smoothed one-hot)·gradScale for one logit.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Gradient(float z, int column, int target, float max, float inverse, float smoothing, float uniform, float gradScale)
    {
        var p = MathF.Exp(z - max) * inverse;
        var q = column == target ? 1f - smoothing + uniform : uniform;
        return (p - q) * gradScale;
    }

    // One group for all N rows: mean of the counted rows' losses.
    private static void MeanKernel(ArrayView<float> result, ArrayView<float> losses, ArrayView<int> targets, int rows, int ignoreIndex)
    {
        var scratch = SharedMemory.Allocate<float>(GroupReduce.MaxGroupSize);
        var sum = 0f;
        var count = 0f;
        for (var r = Group.IdxX; r < rows; r += Group.DimX)
        {
            var target = targets[r];
            if (target >= 0 && target != ignoreIndex)
            {
                sum += losses[r];
                count += 1f;
            }
        }
        sum = GroupReduce.Sum(sum, scratch);
        count = GroupReduce.Sum(count, scratch);
        if (Group.IdxX == 0)
            result[0] = sum / count;
    }
}
