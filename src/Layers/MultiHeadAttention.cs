using GpuTransformer.Kernels;
using GpuTransformer.Kernels.Backends;
using ILGPU;

namespace GpuTransformer.Layers;

/// <summary>
/// <c>nn.MultiheadAttention(E, H, batch_first=True)</c>: MultiHead(Q, K, V) = Concat(head₁ … head_H)·W_Oᵀ + b_O,
/// headᵢ = softmax(QW_Qᵢ (KW_Kᵢ)ᵀ/√d)·VW_Vᵢ, d = E/H. Parameters as PyTorch names them:
/// <c>in_proj_weight</c> [3E, E] (rows q | k | v, xavier_uniform), <c>in_proj_bias</c> [3E] (0),
/// <c>out_proj.weight</c> [E, E] (kaiming_uniform(a=√5)) and <c>out_proj.bias</c> [E] (0).
/// What both kinds share: the projections, attention on strided q, k, v (heads are column
/// blocks of d; no transposes), the output projection, and the probabilities of the last
/// attention for inspection. <see cref="SelfAttention"/> reads q, k and v from one stream,
/// <see cref="CrossAttention"/> reads k and v from the encoder memory.
/// <para>
/// Which attention: in training mode with Tk ≤ <see cref="KernelTuning.UnfusedAttentionMaxLength"/>
/// (PoCL: 512; GPUs: never) the unfused path (<see cref="UnfusedAttentionKernels"/>: batched
/// products and softmax, P [B, H, Tq, Tk] kept), which is faster forward+backward there;
/// otherwise, and for every forward in evaluation mode (no backward follows), the fused
/// kernels (<see cref="AttentionKernels"/>).
/// </para>
/// <para>
/// No dropout on the attention probabilities: the fused kernel never materialises them, so
/// PyTorch's <c>dropout</c> argument of nn.MultiheadAttention has no counterpart here (the
/// layers' other dropouts are PyTorch's). Parity with PyTorch is checked with dropout 0.
/// </para>
/// <para>
/// Keeps for the backward: the attention output (context) and its row log-sum-exp (the fused
/// kernel recomputes the probabilities from them) or, unfused, the probabilities P [B, H, Tq, Tk];
/// and which path ran and which tensors held q, k, v and the mask — by
/// reference, never as raw views, so that reading them after their owner freed them (a disposed
/// key/value cache) is refused rather than done.
/// </para>
/// </summary>
public abstract class MultiHeadAttention : Module
{
    private readonly MatmulKernels matmul;
    private readonly ReductionKernels reduction;
    private readonly AttentionKernels attention;
    private readonly UnfusedAttentionKernels unfused;
    private readonly Tensor<float> context;          // concatenated heads [B, Tq, E]
    private readonly Tensor<float> logSumExp;        // fused: [B, H, Tq]
    private readonly Tensor<float> rowDot;           // fused: backward scratch [B, H, Tq]
    private readonly Tensor<float> probabilities;    // unfused: P [B, H, Tq, Tk]
    private readonly Tensor<float> dScores;          // unfused: backward scratch dP, dS [B, H, Tq, Tk]
    private Attended? attended;

    /// <summary>The parameters and kernels of <paramref name="heads"/> heads over width <paramref name="dModel"/>.</summary>
    private protected MultiHeadAttention(ComputeDevice device, int dModel, int heads, ParameterInitializer init)
        : base(device)
    {
        ArgumentNullException.ThrowIfNull(init);
        Require.Positive(dModel, nameof(dModel));
        Require.Positive(heads, nameof(heads));
        if (dModel % heads != 0)
            throw new ArgumentException($"d_model ({dModel}) must be divisible by nhead ({heads}).", nameof(heads));
        if (dModel / heads > AttentionKernels.MaxHeadDim)
            throw new ArgumentException($"Head size d_model/nhead = {dModel / heads} exceeds the supported {AttentionKernels.MaxHeadDim}.", nameof(heads));
        DModel = dModel;
        Heads = heads;
        HeadDim = dModel / heads;

        InProjWeight = Parameter("in_proj_weight", [3 * dModel, dModel], decay: true);
        InProjBias = Parameter("in_proj_bias", [3 * dModel], decay: false);
        OutProj = Child("out_proj", new Linear(device, dModel, dModel, bias: true, init));
        init.XavierUniform(InProjWeight);
        ParameterInitializer.Constant(InProjBias, 0f);
        ParameterInitializer.Constant(OutProj.Bias!, 0f);

        matmul = device.Kernels<MatmulKernels>();
        reduction = device.Kernels<ReductionKernels>();
        attention = device.Kernels<AttentionKernels>();
        unfused = device.Kernels<UnfusedAttentionKernels>();
        context = Buffer<float>(1);
        logSumExp = Buffer<float>(1);
        rowDot = Buffer<float>(1);
        probabilities = Buffer<float>(1);
        dScores = Buffer<float>(1);
    }

    /// <summary>E, the model width d_model.</summary>
    public int DModel { get; }

    /// <summary>H.</summary>
    public int Heads { get; }

    /// <summary>d = E/H.</summary>
    public int HeadDim { get; }

    /// <summary>[3E, E]: the q, k, v projections stacked (rows 0…E, E…2E, 2E…3E).</summary>
    public Parameter InProjWeight { get; }

    /// <summary>[3E].</summary>
    public Parameter InProjBias { get; }

    /// <summary>The output projection W_O [E, E], b_O [E].</summary>
    public Linear OutProj { get; }

    /// <summary>Learnable scalars: in_proj [3E, E] and [3E], out_proj.</summary>
    internal static long ParameterCount(int dModel) =>
        (3L * dModel * dModel) + (3L * dModel) + Linear.ParameterCount(dModel, dModel, bias: true);

    /// <summary>
    /// Device bytes every attention holds after a step over [<paramref name="batch"/>, <paramref name="queryLength"/>]
    /// queries and <paramref name="keyLength"/> keys: context [B, Tq, E]; fused, log-sum-exp [B, H, Tq] (+ the backward's
    /// row dots [B, H, Tq]), or, when training runs unfused (Tk ≤ <paramref name="unfusedAttentionMaxLength"/>,
    /// <see cref="KernelTuning.UnfusedAttentionMaxLength"/>), P and the backward's dS [B, H, Tq, Tk]; and the output projection's.
    /// </summary>
    private protected static long SharedActivationBytes(int batch, int queryLength, int keyLength, int dModel, int heads, bool training, int unfusedAttentionMaxLength)
    {
        var rows = (long)batch * queryLength;
        var rowStatistics = (long)batch * heads * queryLength;
        var attention = training && keyLength <= unfusedAttentionMaxLength ? 2 * rowStatistics * keyLength : rowStatistics * (training ? 2 : 1);
        return (sizeof(float) * ((rows * dModel) + attention)) + Linear.ActivationBytes(rows, dModel, dModel, training);
    }

    // ------------------------------------------------------------------ inspection

    /// <summary>
    /// B, H, Tq, Tk of the last attention this module ran (a whole sequence or a cached step;
    /// with the cache Tk is every cached key); null before the first.
    /// </summary>
    public AttentionShape? LastAttentionShape => attended?.Shape;

    /// <summary>
    /// The attention probabilities of the last forward (whole sequence or cached step),
    /// [B, H, Tq, Tk] row-major on the host: <see cref="AttentionKernels.Probabilities"/> on the q and k
    /// that forward computed, with its masks (masked keys 0; a fully masked row all 0). For
    /// attention maps; call it before the next forward of this module and, after a cached step,
    /// before the cache is disposed. Allocates a device buffer per call.
    /// </summary>
    /// <exception cref="InvalidOperationException">No forward has run yet, or what it read is gone (its key/value cache disposed, or another forward reshaped it).</exception>
    public float[] LastProbabilities()
    {
        var a = attended ?? throw new InvalidOperationException("LastProbabilities needs a forward first.");
        var (q, k, _, options) = a.Operands(DModel, nameof(LastProbabilities));
        using var probabilities = new Tensor<float>(Device, a.Shape.Batch, a.Shape.Heads, a.Shape.QueryLength, a.Shape.KeyLength);
        attention.Probabilities(probabilities.View, q, k, a.Shape, options);
        return probabilities.ToArray();
    }

    // ------------------------------------------------------------------ shared steps

    /// <summary>
    /// output = input·W_blkᵀ + b_blk with W_blk = rows [firstBlock·E, (firstBlock + blocks)·E) of
    /// in_proj. With <paramref name="rowsPerSequence"/> the output rows of each sequence start
    /// <paramref name="outputSequenceStride"/> elements apart (a KV cache); otherwise packed.
    /// // input [B, T, E] → output [B, T, blocks·E]
    /// </summary>
    private protected void Project(ArrayView<float> output, Tensor<float> input, int firstBlock, int blocks, int rowsPerSequence = 0, long outputSequenceStride = 0)
    {
        ArgumentNullException.ThrowIfNull(input);
        var e = DModel;
        var rows = input.Length / e;
        var weight = InProjWeight.Value.View.SubView((long)firstBlock * e * e, (long)blocks * e * e);
        var bias = InProjBias.Value.View.SubView((long)firstBlock * e, (long)blocks * e);
        var epilogue = new MatmulEpilogue { Bias = bias };
        if (rowsPerSequence == 0)
        {
            matmul.Multiply(output, input.View, weight, rows, blocks * e, e, MatmulLayout.NT, epilogue);
            return;
        }
        var sequences = rows / rowsPerSequence;
        var batch = new MatmulBatch(sequences, (long)rowsPerSequence * e, 0, outputSequenceStride);
        matmul.Multiply(output, input.View, weight, rowsPerSequence, blocks * e, e, MatmulLayout.NT, epilogue, batch);
    }

    /// <summary>
    /// Backward of <see cref="Project"/>: dInput = dOut·W_blk; accumulates dW_blk += dOutᵀ·input
    /// and db_blk += Σ_rows dOut. // dOut [B, T, blocks·E] → dInput [B, T, E]
    /// </summary>
    private protected Tensor<float> ProjectBackward(Tensor<float> dInput, Tensor<float> dOut, Tensor<float> input, int firstBlock, int blocks)
    {
        ArgumentNullException.ThrowIfNull(dInput);
        ArgumentNullException.ThrowIfNull(dOut);
        ArgumentNullException.ThrowIfNull(input);
        var e = DModel;
        var rows = input.Length / e;
        var weight = InProjWeight.Value.View.SubView((long)firstBlock * e * e, (long)blocks * e * e);
        var dWeight = InProjWeight.Gradient.View.SubView((long)firstBlock * e * e, (long)blocks * e * e);
        var dBias = InProjBias.Gradient.View.SubView((long)firstBlock * e, (long)blocks * e);
        dInput.ResizeLike(input, e);
        matmul.Multiply(dInput.View, dOut.View, weight, rows, e, blocks * e, MatmulLayout.NN);
        matmul.Multiply(dWeight, dOut.View, input.View, blocks * e, e, rows, MatmulLayout.TN, new MatmulEpilogue { Accumulate = true });
        reduction.ColumnSums(dBias, dOut.View, rows, blocks * e, accumulate: true);
        return dInput;
    }

    /// <summary>
    /// out_proj(softmax(mask(q·kᵀ/√d))·v) per sequence and head, keeping what the backward needs.
    /// q is <paramref name="queries"/> from its start; k and v are <paramref name="keyValues"/> from
    /// <paramref name="keyOffset"/> and E further on, with <paramref name="keyValueStrides"/>. // → [B, Tq, E]
    /// </summary>
    private protected Tensor<float> Attend(
        int batch, int queryLength, int keyLength,
        Tensor<float> queries, AttentionStrides queryStrides, Tensor<float> keyValues, long keyOffset, AttentionStrides keyValueStrides,
        Tensor<int>? keyPadding, bool causal, int causalOffset) =>
        Attend(batch, queryLength, keyLength, queries, queryStrides, keyValues, keyOffset, keyValueStrides, keyPadding, causal, causalOffset, residual: null);

    /// <summary>
    /// <see cref="Attend(int, int, int, Tensor{float}, AttentionStrides, Tensor{float}, long, AttentionStrides, Tensor{int}?, bool, int)"/>;
    /// with <paramref name="residual"/> (evaluation only) out_proj adds into it in place and returns it.
    /// </summary>
    private protected Tensor<float> Attend(
        int batch, int queryLength, int keyLength,
        Tensor<float> queries, AttentionStrides queryStrides, Tensor<float> keyValues, long keyOffset, AttentionStrides keyValueStrides,
        Tensor<int>? keyPadding, bool causal, int causalOffset, Tensor<float>? residual)
    {
        ArgumentNullException.ThrowIfNull(queries);
        ArgumentNullException.ThrowIfNull(keyValues);
        context.Resize(batch, queryLength, DModel);
        var shape = new AttentionShape(batch, Heads, queryLength, keyLength, HeadDim);
        var runUnfused = Training && keyLength <= Device.Tuning.UnfusedAttentionMaxLength;
        var options = new AttentionOptions
        {
            Causal = causal,
            CausalOffset = causalOffset,
            Query = queryStrides,
            Key = keyValueStrides,
            Value = keyValueStrides,
        };
        attended = new Attended(shape, options, runUnfused, queries, queries.Length, keyValues, keyValues.Length, keyOffset, keyPadding, keyPadding?.Length ?? 0);
        var (q, k, v, withMask) = attended.Value.Operands(DModel, nameof(Attend));
        if (runUnfused)
            unfused.Forward(context.View, probabilities.Resize(batch, Heads, queryLength, keyLength).View, q, k, v, shape, withMask);
        else
            attention.Forward(context.View, logSumExp.Resize(batch, Heads, queryLength).View, q, k, v, shape, withMask);
        return residual is null
            ? OutProj.Forward(context)                                          // [B, Tq, E]
            : OutProj.ForwardAddInto(residual, context);                        // residual += out_proj(context)
    }

    /// <summary>dq, dk, dv (written with the forward's strides) from dy, through the output projection. // dy [B, Tq, E]</summary>
    private protected void AttendBackward(ArrayView<float> dq, ArrayView<float> dk, ArrayView<float> dv, Tensor<float> dOutput)
    {
        var a = attended ?? throw new InvalidOperationException("Attention backward needs a forward first.");
        var dContext = OutProj.Backward(dOutput);                               // [B, Tq, E]
        var (q, k, v, options) = a.Operands(DModel, "Backward");
        var (batch, queryLength, keyLength) = (a.Shape.Batch, a.Shape.QueryLength, a.Shape.KeyLength);
        if (a.Unfused)
        {
            dScores.Resize(batch, Heads, queryLength, keyLength);
            unfused.Backward(dq, dk, dv, dScores.View, dContext.View, probabilities.View, q, k, v, a.Shape, options);
            return;
        }
        rowDot.Resize(batch, Heads, queryLength);
        attention.Backward(dq, dk, dv, rowDot.View, dContext.View, context.View, logSumExp.View, q, k, v, a.Shape, options);
    }

    /// <summary>(B, T) of a [B, T, E] input, or an ArgumentException naming it.</summary>
    private protected (int Batch, int Length) Sequence(Tensor<float> x, string name)
    {
        ArgumentNullException.ThrowIfNull(x, name);
        if (x.Rank != 3 || x.Dim(2) != DModel)
            throw new ArgumentException($"{name} has shape {x} but attention takes [B, T, {DModel}].", name);
        return (x.Dim(0), x.Dim(1));
    }

    /// <summary>An ArgumentException naming the mask unless it is null or [B, Tk].</summary>
    private protected static void RequireMask(Tensor<int>? mask, int batch, int keys, string name)
    {
        if (mask is not null && !mask.HasShape(batch, keys))
            throw new ArgumentException($"{name} has shape {mask} but the keys are [{batch}, {keys}].", name);
    }

    /// <summary>
    /// What the last attention read, as the tensors that hold it and the lengths they had: its
    /// views are taken again on each use, so a freed or reshaped buffer is refused, never read.
    /// </summary>
    private readonly record struct Attended(
        AttentionShape Shape, AttentionOptions Options, bool Unfused,
        Tensor<float> Queries, int QueriesLength, Tensor<float> KeyValues, int KeyValuesLength, long KeyOffset,
        Tensor<int>? KeyPadding, int KeyPaddingLength)
    {
        public (ArrayView<float> Q, ArrayView<float> K, ArrayView<float> V, AttentionOptions Options) Operands(int dModel, string caller)
        {
            if (Queries.IsDisposed || KeyValues.IsDisposed || KeyPadding?.IsDisposed == true)
                throw new InvalidOperationException($"{caller}: the queries, keys, values or mask of the last attention have been freed (its key/value cache was disposed); read them before disposing the cache.");
            if (Queries.Length != QueriesLength || KeyValues.Length != KeyValuesLength || (KeyPadding?.Length ?? 0) != KeyPaddingLength)
                throw new InvalidOperationException($"{caller}: the queries, keys, values or mask of the last attention have been reshaped by another forward since.");
            var keyValues = KeyValues.View;
            return (Queries.View, keyValues.SubView(KeyOffset), keyValues.SubView(KeyOffset + dModel), Options with { KeyPaddingMask = KeyPadding?.View ?? default });
        }
    }
}
