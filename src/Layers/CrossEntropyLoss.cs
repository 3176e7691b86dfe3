using GpuTransformer.Kernels;
using GpuTransformer.Kernels.Backends;

namespace GpuTransformer.Layers;

/// <summary>
/// <c>nn.CrossEntropyLoss(ignore_index, label_smoothing)</c> with the mean reduction over the
/// targets that are not ignored: loss = (1/n) Σ_{t ≠ ignore} [lse(z) − (1 − ε)·z_t − (ε/V)·Σ_j z_j].
/// n is counted on the host from the host targets. <see cref="Forward"/> computes the loss and
/// its gradient in one launch, writing dLogits over the logits (they are not needed again, and
/// that saves N·V floats); it reads the loss back (one host sync).
/// <para>Keeps for the backward: dLogits (in the logits tensor).</para>
/// </summary>
public sealed class CrossEntropyLoss : Module
{
    private readonly CrossEntropyKernels kernels;
    private readonly Tensor<int> targets;
    private readonly Tensor<float> losses;
    private readonly Tensor<float> mean;
    private Tensor<float>? logitsGradient;

    /// <summary>Mean cross-entropy of logits against target ids, fused with its gradient.</summary>
    /// <param name="device">Where the buffers live.</param>
    /// <param name="ignoreIndex">Targets equal to this add nothing and are not counted (the pad id; −100 as PyTorch's default).</param>
    /// <param name="labelSmoothing">ε in [0, 1): the target distribution is (1 − ε)·onehot + ε/V.</param>
    public CrossEntropyLoss(ComputeDevice device, int ignoreIndex = CrossEntropyOptions.DefaultIgnoreIndex, float labelSmoothing = 0f)
        : base(device)
    {
        IgnoreIndex = ignoreIndex;
        LabelSmoothing = labelSmoothing;
        kernels = device.Kernels<CrossEntropyKernels>();
        targets = Buffer<int>(1);
        losses = Buffer<float>(1);
        mean = Buffer<float>(1);
    }

    /// <summary>Targets equal to this are ignored (not counted).</summary>
    public int IgnoreIndex { get; }

    /// <summary>ε of label smoothing, in [0, 1) (the paper trains with 0.1).</summary>
    public float LabelSmoothing
    {
        get => Options.LabelSmoothing;
        set
        {
            if (!(value >= 0f && value < 1f))
                throw new ArgumentException($"Label smoothing must be in [0, 1), got {value}.", nameof(value));
            Options = new CrossEntropyOptions { IgnoreIndex = IgnoreIndex, LabelSmoothing = value };
        }
    }

    /// <summary>Ignore index and label smoothing as the kernels take them.</summary>
    public CrossEntropyOptions Options { get; private set; } = CrossEntropyOptions.Default;

    /// <summary>Device bytes of its buffers over <paramref name="rows"/> rows: the losses [rows] and their mean, the targets [rows] (ints); dLogits overwrite the logits.</summary>
    internal static long ActivationBytes(long rows) => (sizeof(float) * (rows + 1)) + (sizeof(int) * rows);

    /// <summary>How many targets the last <see cref="Forward"/> counted (not ignored).</summary>
    public int CountedTargets { get; private set; }

    /// <summary>
    /// The mean loss of <paramref name="logits"/> against <paramref name="targetIds"/>; replaces the
    /// logits by <paramref name="gradientScale"/>·dLoss/dLogits (the scale rides on the kernel's
    /// 1/n, so scaling costs no pass over [B, T, V]). NaN when every target is ignored (as
    /// PyTorch; the gradient is then 0). // logits [B, T, V], targets [B, T]
    /// </summary>
    /// <exception cref="ArgumentException">The shapes differ, or a target is outside [0, V) and not the ignore index (named with its position).</exception>
    public float Forward(Tensor<float> logits, TokenIds targetIds, float gradientScale = 1f)
    {
        ArgumentNullException.ThrowIfNull(logits);
        ArgumentNullException.ThrowIfNull(targetIds);
        var vocabulary = logits.Dim(-1);
        var rows = logits.Length / vocabulary;
        if (rows != targetIds.Count || (logits.Rank == 3 && (logits.Dim(0) != targetIds.Batch || logits.Dim(1) != targetIds.Length)))
            throw new ArgumentException($"The targets have shape {targetIds} but the logits have shape {logits}.", nameof(targetIds));
        targetIds.RequireInVocabulary(vocabulary, "targets", Options.IgnoreIndex);
        var counted = 0;
        foreach (var t in targetIds.Span)
            counted += t != Options.IgnoreIndex ? 1 : 0;
        CountedTargets = counted;

        targets.Resize(rows).CopyFrom(targetIds.Span);
        losses.Resize(rows);
        var gradScale = counted > 0 ? gradientScale / counted : 0f;
        kernels.ForwardBackward(losses.View, logits.View, logits.View, targets.View, rows, vocabulary, gradScale, Options);
        kernels.MeanLoss(mean.View, losses.View, targets.View, rows, Options);
        logitsGradient = logits;
        return mean.ToArray()[0];
    }

    /// <summary>dLoss/dLogits of the last <see cref="Forward"/> (the logits tensor, overwritten). // [B, T, V]</summary>
    public Tensor<float> Backward() =>
        logitsGradient ?? throw new InvalidOperationException("CrossEntropyLoss.Backward needs a Forward first.");
}
