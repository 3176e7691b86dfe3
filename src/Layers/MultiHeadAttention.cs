using GpuTransformer.Kernels;
using GpuTransformer.Kernels.Backends;
using ILGPU;

namespace GpuTransformer.Layers;

/// <summary>
/// <c>nn.MultiheadAttention(E, H, batch_first=True)</c>: MultiHead(Q, K, V) = Concat(head₁ … head_H)·W_Oᵀ + b_O,
/// headᵢ = softmax(QW_Qᵢ (KW_Kᵢ)ᵀ/√d)·VW_Vᵢ, d = E/H. Parameters as PyTorch names them:
/// <c>in_proj_weight</c> [3E, E] (rows q | k | v, xavier_uniform), <c>in_proj_bias</c> [3E] (0),
/// <c>out_proj.weight</c> [E, E] (kaiming_uniform(a=√5)) and <c>out_proj.bias</c> [E] (0).
/// <para>
/// Self-attention projects q, k and v with one product into a [B, T, 3E] buffer that the fused
/// attention kernel reads through strides (heads are column blocks of d; no transposes);
/// cross-attention projects the queries with rows 0…E of in_proj and the memory with rows E…3E
/// into [B, S, 2E] (sub-views of the weight, no copies). Key padding masks [B, Tk] (1 = padded
/// key) hide keys; <see cref="Causal"/> self-attention hides later positions.
/// </para>
/// <para>
/// No dropout on the attention probabilities: the fused kernel never materialises them, so
/// PyTorch's <c>dropout</c> argument of nn.MultiheadAttention has no counterpart here (the
/// layers' other dropouts are PyTorch's). Parity with PyTorch is checked with dropout 0.
/// </para>
/// <para>
/// Keeps for the backward: the input(s) (references), the projected q/k/v, the attention
/// output and its row log-sum-exp (the kernel recomputes the probabilities from them), and the
/// mask it used.
/// </para>
/// </summary>
public sealed class MultiHeadAttention : Module
{
    private readonly MatmulKernels matmul;
    private readonly ReductionKernels reduction;
    private readonly AttentionKernels attention;
    private readonly Tensor<float> projected;        // self: qkv [B, T, 3E]; cross and cached: q [B, Tq, E]
    private readonly Tensor<float> memoryProjected;  // cross: k | v [B, Tk, 2E]
    private readonly Tensor<float> context;          // concatenated heads [B, Tq, E]
    private readonly Tensor<float> logSumExp;        // [B, H, Tq]
    private readonly Tensor<float> rowDot;           // backward scratch [B, H, Tq]
    private readonly Tensor<float> projectedGradient;
    private readonly Tensor<float> memoryProjectedGradient;
    private readonly Tensor<float> inputGradient;
    private readonly Tensor<float> memoryGradient;
    private Saved? saved;
    private Attended attended;

    /// <param name="causal">Self-attention hides keys after each query (the decoder's mask); ignored by cross-attention.</param>
    public MultiHeadAttention(ComputeDevice device, int dModel, int heads, bool causal, ParameterInitializer init)
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
        Causal = causal;

        InProjWeight = Parameter("in_proj_weight", [3 * dModel, dModel], decay: true);
        InProjBias = Parameter("in_proj_bias", [3 * dModel], decay: false);
        OutProj = Child("out_proj", new Linear(device, dModel, dModel, bias: true, init));
        init.XavierUniform(InProjWeight);
        ParameterInitializer.Constant(InProjBias, 0f);
        ParameterInitializer.Constant(OutProj.Bias!, 0f);

        matmul = device.Kernels<MatmulKernels>();
        reduction = device.Kernels<ReductionKernels>();
        attention = device.Kernels<AttentionKernels>();
        projected = Buffer<float>(1);
        memoryProjected = Buffer<float>(1);
        context = Buffer<float>(1);
        logSumExp = Buffer<float>(1);
        rowDot = Buffer<float>(1);
        projectedGradient = Buffer<float>(1);
        memoryProjectedGradient = Buffer<float>(1);
        inputGradient = Buffer<float>(1);
        memoryGradient = Buffer<float>(1);
    }

    /// <summary>E, the model width d_model.</summary>
    public int DModel { get; }

    /// <summary>H.</summary>
    public int Heads { get; }

    /// <summary>d = E/H.</summary>
    public int HeadDim { get; }

    /// <summary>Whether self-attention is causal.</summary>
    public bool Causal { get; }

    /// <summary>[3E, E]: the q, k, v projections stacked (rows 0…E, E…2E, 2E…3E).</summary>
    public Parameter InProjWeight { get; }

    /// <summary>[3E].</summary>
    public Parameter InProjBias { get; }

    /// <summary>The output projection W_O [E, E], b_O [E].</summary>
    public Linear OutProj { get; }

    // ------------------------------------------------------------------ self-attention

    /// <summary>
    /// Self-attention: queries, keys and values all from x (causal when <see cref="Causal"/>).
    /// // x [B, T, E], keyPadding [B, T] (1 = padded) → [B, T, E]
    /// </summary>
    /// <exception cref="ArgumentException">x is not [B, T, E] or the mask is not [B, T].</exception>
    public Tensor<float> Forward(Tensor<float> x, Tensor<int>? keyPadding = null)
    {
        var (batch, length) = Sequence(x, nameof(x));
        RequireMask(keyPadding, batch, length, nameof(keyPadding));
        var e = DModel;

        // q | k | v = x·W_inᵀ + b_in in one product.                         // [B, T, 3E]
        projected.Resize(batch, length, 3 * e);
        Project(projected.View, x, firstBlock: 0, blocks: 3);
        var qkv = projected.View;
        var fused = AttentionStrides.Fused(length, Heads, HeadDim, 3);
        Attend(batch, length, length, qkv, fused, qkv.SubView(e), qkv.SubView(2 * e), fused, keyPadding, Causal, causalOffset: 0);
        saved = new Saved(x, Memory: null);
        return OutProj.Forward(context);                                        // [B, T, E]
    }

    /// <summary>
    /// Backward of self-attention <see cref="Forward(Tensor{float}, Tensor{int})"/>: dx, accumulating
    /// every parameter gradient. // dy [B, T, E] → dx [B, T, E]
    /// </summary>
    public Tensor<float> Backward(Tensor<float> dOutput)
    {
        var (x, memory) = saved ?? throw new InvalidOperationException("MultiHeadAttention.Backward needs a Forward first.");
        if (memory is not null)
            throw new InvalidOperationException("The last forward was cross-attention: call BackwardCross.");
        var e = DModel;

        var dContext = OutProj.Backward(dOutput);                               // [B, T, E]
        var dqkv = projectedGradient.ResizeLike(projected, 3 * e);             // [B, T, 3E], mirrors qkv
        AttendBackward(dqkv.View, dqkv.View.SubView(e), dqkv.View.SubView(2 * e), dContext);
        return ProjectBackward(inputGradient, dqkv, x, firstBlock: 0, blocks: 3);
    }

    // ------------------------------------------------------------------ cross-attention

    /// <summary>
    /// Cross-attention: queries from <paramref name="query"/> (the decoder stream), keys and
    /// values from <paramref name="memory"/> (the encoder output). Never causal.
    /// // query [B, Tq, E], memory [B, Tk, E], memoryPadding [B, Tk] → [B, Tq, E]
    /// </summary>
    /// <exception cref="ArgumentException">Shapes are not [B, Tq, E] and [B, Tk, E] with one B, or the mask is not [B, Tk].</exception>
    public Tensor<float> Forward(Tensor<float> query, Tensor<float> memory, Tensor<int>? memoryPadding)
    {
        ProjectMemory(memory, memoryProjected);
        var output = AttendMemory(query, memoryProjected, memoryPadding);
        saved = new Saved(query, memory);
        return output;
    }

    /// <summary>
    /// Backward of cross-attention: dQuery and dMemory, accumulating every parameter gradient.
    /// // dy [B, Tq, E] → (dQuery [B, Tq, E], dMemory [B, Tk, E])
    /// </summary>
    public (Tensor<float> Query, Tensor<float> Memory) BackwardCross(Tensor<float> dOutput)
    {
        var (query, memory) = saved ?? throw new InvalidOperationException("MultiHeadAttention.BackwardCross needs a Forward first.");
        if (memory is null)
            throw new InvalidOperationException("The last forward was self-attention: call Backward.");
        var e = DModel;

        var dContext = OutProj.Backward(dOutput);                               // [B, Tq, E]
        var dq = projectedGradient.ResizeLike(projected, e);                   // [B, Tq, E]
        var dkv = memoryProjectedGradient.ResizeLike(memoryProjected, 2 * e);  // [B, Tk, 2E], mirrors kv
        AttendBackward(dq.View, dkv.View, dkv.View.SubView(e), dContext);
        var dQuery = ProjectBackward(inputGradient, dq, query, firstBlock: 0, blocks: 1);
        var dMemory = ProjectBackward(memoryGradient, dkv, memory, firstBlock: 1, blocks: 2);
        return (dQuery, dMemory);
    }

    // ------------------------------------------------------------------ incremental decoding (no backward)

    /// <summary>
    /// k | v = memory·W_kvᵀ + b_kv (rows E…3E of in_proj) into <paramref name="keyValues"/>:
    /// the cross-attention keys and values, computed once per source when decoding.
    /// // memory [B, Tk, E] → keyValues [B, Tk, 2E]
    /// </summary>
    internal void ProjectMemory(Tensor<float> memory, Tensor<float> keyValues)
    {
        var (batch, length) = Sequence(memory, nameof(memory));
        keyValues.Resize(batch, length, 2 * DModel);
        Project(keyValues.View, memory, firstBlock: 1, blocks: 2);
    }

    /// <summary>
    /// Cross-attention over keys and values projected beforehand (<see cref="ProjectMemory"/>).
    /// // query [B, Tq, E], keyValues [B, Tk, 2E] → [B, Tq, E]
    /// </summary>
    internal Tensor<float> AttendMemory(Tensor<float> query, Tensor<float> keyValues, Tensor<int>? memoryPadding)
    {
        var (batch, queryLength) = Sequence(query, nameof(query));
        if (keyValues.Rank != 3 || keyValues.Dim(0) != batch || keyValues.Dim(2) != 2 * DModel)
            throw new ArgumentException($"query has shape {query} but the memory's keys and values have shape {keyValues}; the batch sizes must match.", nameof(query));
        var keyLength = keyValues.Dim(1);
        RequireMask(memoryPadding, batch, keyLength, nameof(memoryPadding));
        var e = DModel;

        // q = query·W_qᵀ + b_q (rows 0…E of in_proj).                       // [B, Tq, E]
        projected.Resize(batch, queryLength, e);
        Project(projected.View, query, firstBlock: 0, blocks: 1);
        var kv = keyValues.View;
        var kvStrides = AttentionStrides.Fused(keyLength, Heads, HeadDim, 2);
        Attend(batch, queryLength, keyLength, projected.View, AttentionStrides.Dense(queryLength, Heads, HeadDim), kv, kv.SubView(e), kvStrides, memoryPadding, causal: false, causalOffset: 0);
        saved = null;
        return OutProj.Forward(context);
    }

    /// <summary>
    /// Self-attention for new positions only: projects the Tn new tokens, appends their keys and
    /// values to <paramref name="cache"/> after the <paramref name="cachedLength"/> cached ones and
    /// attends over all of them with the causal diagonal shifted by the cached length.
    /// // x [B, Tn, E], cache [B, Tmax, 2E], keyPadding [B, cachedLength + Tn] → [B, Tn, E]
    /// </summary>
    internal Tensor<float> ForwardCached(Tensor<float> x, Tensor<float> cache, int cachedLength, Tensor<int>? keyPadding)
    {
        var (batch, newLength) = Sequence(x, nameof(x));
        var maxLength = cache.Dim(1);
        var keyLength = cachedLength + newLength;
        if (cache.Dim(0) != batch || keyLength > maxLength)
            throw new ArgumentException($"x {x} does not fit the cache {cache} after {cachedLength} cached positions.", nameof(x));
        RequireMask(keyPadding, batch, keyLength, nameof(keyPadding));
        var e = DModel;

        // q = x·W_qᵀ + b_q.                                                   // [B, Tn, E]
        projected.Resize(batch, newLength, e);
        Project(projected.View, x, firstBlock: 0, blocks: 1);
        // k | v of the new positions, written straight into the cache rows cachedLength… of every sequence.
        var appended = cache.View.SubView((long)cachedLength * 2 * e);
        Project(appended, x, firstBlock: 1, blocks: 2, rowsPerSequence: newLength, outputSequenceStride: (long)maxLength * 2 * e);
        var kvStrides = new AttentionStrides((long)maxLength * 2 * e, 2 * e, HeadDim);
        Attend(batch, newLength, keyLength, projected.View, AttentionStrides.Dense(newLength, Heads, HeadDim), cache.View, cache.View.SubView(e), kvStrides, keyPadding, Causal, causalOffset: cachedLength);
        saved = null;
        return OutProj.Forward(context);
    }

    // ------------------------------------------------------------------ inspection

    /// <summary>
    /// B, H, Tq, Tk of the last attention this module ran (self, cross or a cached step; with
    /// the cache Tk is every cached key); null before the first.
    /// </summary>
    public AttentionShape? LastAttentionShape => attended.Q.IsValid ? attended.Shape : null;

    /// <summary>
    /// The attention probabilities of the last forward (self, cross or cached step),
    /// [B, H, Tq, Tk] row-major on the host: <see cref="AttentionKernels.Probabilities"/> on the q and k
    /// that forward computed, with its masks (masked keys 0; a fully masked row all 0). For
    /// attention maps; call it before the next forward of this module (and, after a cached
    /// step, while the cache lives). Allocates a device buffer per call.
    /// </summary>
    /// <exception cref="InvalidOperationException">No forward has run yet.</exception>
    public float[] LastProbabilities()
    {
        var a = attended;
        if (!a.Q.IsValid)
            throw new InvalidOperationException("LastProbabilities needs a forward first.");
        using var probabilities = new Tensor<float>(Device, a.Shape.Batch, a.Shape.Heads, a.Shape.QueryLength, a.Shape.KeyLength);
        attention.Probabilities(probabilities.View, a.Q, a.K, a.Shape, a.Options);
        return probabilities.ToArray();
    }

    // ------------------------------------------------------------------ shared steps

    /// <summary>
    /// output = input·W_blkᵀ + b_blk with W_blk = rows [firstBlock·E, (firstBlock + blocks)·E) of
    /// in_proj. With <paramref name="rowsPerSequence"/> the output rows of each sequence start
    /// <paramref name="outputSequenceStride"/> elements apart (a KV cache); otherwise packed.
    /// // input [B, T, E] → output [B, T, blocks·E]
    /// </summary>
    private void Project(ArrayView<float> output, Tensor<float> input, int firstBlock, int blocks, int rowsPerSequence = 0, long outputSequenceStride = 0)
    {
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
    private Tensor<float> ProjectBackward(Tensor<float> dInput, Tensor<float> dOut, Tensor<float> input, int firstBlock, int blocks)
    {
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

    /// <summary>context = softmax(mask(q·kᵀ/√d))·v per sequence and head, keeping what the backward needs. // → [B, Tq, E]</summary>
    private void Attend(
        int batch, int queryLength, int keyLength,
        ArrayView<float> q, AttentionStrides queryStrides, ArrayView<float> k, ArrayView<float> v, AttentionStrides keyValueStrides,
        Tensor<int>? keyPadding, bool causal, int causalOffset)
    {
        context.Resize(batch, queryLength, DModel);
        logSumExp.Resize(batch, Heads, queryLength);
        var shape = new AttentionShape(batch, Heads, queryLength, keyLength, HeadDim);
        var options = new AttentionOptions
        {
            Causal = causal,
            CausalOffset = causalOffset,
            KeyPaddingMask = keyPadding?.View ?? default,
            Query = queryStrides,
            Key = keyValueStrides,
            Value = keyValueStrides,
        };
        attention.Forward(context.View, logSumExp.View, q, k, v, shape, options);
        attended = new Attended(shape, options, q, k, v);
    }

    /// <summary>dq, dk, dv (written with the forward's strides) from dContext.</summary>
    private void AttendBackward(ArrayView<float> dq, ArrayView<float> dk, ArrayView<float> dv, Tensor<float> dContext)
    {
        var a = attended;
        rowDot.Resize(a.Shape.Batch, Heads, a.Shape.QueryLength);
        attention.Backward(dq, dk, dv, rowDot.View, dContext.View, context.View, logSumExp.View, a.Q, a.K, a.V, a.Shape, a.Options);
    }

    private readonly record struct Attended(AttentionShape Shape, AttentionOptions Options, ArrayView<float> Q, ArrayView<float> K, ArrayView<float> V);

    private sealed record Saved(Tensor<float> Input, Tensor<float>? Memory);

    private (int Batch, int Length) Sequence(Tensor<float> x, string name)
    {
        ArgumentNullException.ThrowIfNull(x, name);
        if (x.Rank != 3 || x.Dim(2) != DModel)
            throw new ArgumentException($"{name} has shape {x} but attention takes [B, T, {DModel}].", name);
        return (x.Dim(0), x.Dim(1));
    }

    private static void RequireMask(Tensor<int>? mask, int batch, int keys, string name)
    {
        if (mask is not null && !mask.HasShape(batch, keys))
            throw new ArgumentException($"{name} has shape {mask} but the keys are [{batch}, {keys}].", name);
    }
}
