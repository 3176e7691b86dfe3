using GpuTransformer.Kernels;
using GpuTransformer.Kernels.Backends;

namespace GpuTransformer.Layers;

/// <summary>
/// Cross-attention (<c>multihead_attn</c> of a decoder layer): queries from the decoder stream,
/// keys and values from the encoder memory, never causal. The queries are projected with rows
/// 0…E of in_proj and the memory with rows E…3E into [B, S, 2E] (sub-views of the weight, no
/// copies); a [B, S] key padding mask hides padded source positions. When decoding token by
/// token the memory is projected once (<see cref="ProjectMemory"/>) into the key/value cache and
/// each step attends over it (<see cref="AttendMemory"/>).
/// <para>Keeps for the backward: the query stream and the memory (references), the projected q and k | v, and what <see cref="MultiHeadAttention"/> keeps.</para>
/// </summary>
public sealed class CrossAttention : MultiHeadAttention
{
    private readonly Tensor<float> queries;                  // q [B, Tq, E]
    private readonly Tensor<float> memoryKeyValues;          // k | v [B, S, 2E]
    private readonly Tensor<float> queriesGradient;
    private readonly Tensor<float> memoryKeyValuesGradient;
    private readonly Tensor<float> queryGradient;
    private readonly Tensor<float> memoryGradient;
    private (Tensor<float> Query, Tensor<float> Memory)? inputs;

    /// <summary>Cross-attention of <paramref name="heads"/> heads over width <paramref name="dModel"/>.</summary>
    public CrossAttention(ComputeDevice device, int dModel, int heads, ParameterInitializer init)
        : base(device, dModel, heads, init)
    {
        queries = Buffer<float>(1);
        memoryKeyValues = Buffer<float>(1);
        queriesGradient = Buffer<float>(1);
        memoryKeyValuesGradient = Buffer<float>(1);
        queryGradient = Buffer<float>(1);
        memoryGradient = Buffer<float>(1);
    }

    /// <summary>
    /// Device bytes of its buffers after a step over [B, Tq] queries and [B, S] memory: q [B, Tq, E],
    /// k | v [B, S, 2E] (+ their gradients, dQuery and dMemory when training) and what every attention holds.
    /// </summary>
    internal static long ActivationBytes(int batch, int queryLength, int memoryLength, int dModel, int heads, bool training, int unfusedAttentionMaxLength)
    {
        var (rows, memoryRows) = ((long)batch * queryLength, (long)batch * memoryLength);
        var projected = (rows * dModel) + (2 * memoryRows * dModel);
        var gradients = projected + (rows * dModel) + (memoryRows * dModel);
        return (sizeof(float) * (projected + (training ? gradients : 0))) + SharedActivationBytes(batch, queryLength, memoryLength, dModel, heads, training, unfusedAttentionMaxLength);
    }

    /// <summary>
    /// multihead_attn(query, memory, memory).
    /// // query [B, Tq, E], memory [B, S, E], memoryPadding [B, S] → [B, Tq, E]
    /// </summary>
    /// <exception cref="ArgumentException">Shapes are not [B, Tq, E] and [B, S, E] with one B, or the mask is not [B, S].</exception>
    public Tensor<float> Forward(Tensor<float> query, Tensor<float> memory, Tensor<int>? memoryPadding = null)
    {
        ProjectMemory(memory, memoryKeyValues);
        var output = AttendMemory(query, memoryKeyValues, memoryPadding);
        inputs = (query, memory);
        return output;
    }

    /// <summary>
    /// dQuery and dMemory, accumulating every parameter gradient.
    /// // dy [B, Tq, E] → (dQuery [B, Tq, E], dMemory [B, S, E])
    /// </summary>
    public (Tensor<float> Query, Tensor<float> Memory) Backward(Tensor<float> dOutput)
    {
        var (query, memory) = inputs ?? throw new InvalidOperationException("CrossAttention.Backward needs a Forward (not a cached step) first.");
        var e = DModel;
        var dq = queriesGradient.ResizeLike(queries, e);                        // [B, Tq, E]
        var dkv = memoryKeyValuesGradient.ResizeLike(memoryKeyValues, 2 * e);   // [B, S, 2E], mirrors kv
        AttendBackward(dq.View, dkv.View, dkv.View.SubView(e), dOutput);
        var dQuery = ProjectBackward(queryGradient, dq, query, firstBlock: 0, blocks: 1);
        var dMemory = ProjectBackward(memoryGradient, dkv, memory, firstBlock: 1, blocks: 2);
        return (dQuery, dMemory);
    }

    /// <summary>
    /// k | v = memory·W_kvᵀ + b_kv (rows E…3E of in_proj) into <paramref name="keyValues"/>:
    /// the keys and values, computed once per source when decoding.
    /// // memory [B, S, E] → keyValues [B, S, 2E]
    /// </summary>
    internal void ProjectMemory(Tensor<float> memory, Tensor<float> keyValues)
    {
        var (batch, length) = Sequence(memory, nameof(memory));
        keyValues.Resize(batch, length, 2 * DModel);
        Project(keyValues.View, memory, firstBlock: 1, blocks: 2);
    }

    /// <summary>
    /// Attention over keys and values projected beforehand (<see cref="ProjectMemory"/>; no
    /// backward after it alone). // query [B, Tq, E], keyValues [B, S, 2E] → [B, Tq, E]
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
        queries.Resize(batch, queryLength, e);
        Project(queries.View, query, firstBlock: 0, blocks: 1);
        var kvStrides = AttentionStrides.Fused(keyLength, Heads, HeadDim, 2);
        inputs = null;
        return Attend(batch, queryLength, keyLength, queries, AttentionStrides.Dense(queryLength, Heads, HeadDim), keyValues, keyOffset: 0, kvStrides, memoryPadding, causal: false, causalOffset: 0);
    }
}
