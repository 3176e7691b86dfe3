using GpuTransformer.Kernels;
using GpuTransformer.Kernels.Backends;

namespace GpuTransformer.Layers;

/// <summary>
/// <c>nn.Embedding(V, d_model)</c> (no padding_idx: the pad token's row is ordinary and trainable),
/// with the paper's optional √d_model factor: y[b, t] = W[ids[b, t]]·scale. The table starts
/// N(0, 1) as in PyTorch, or N(0, initStd²). Two embeddings may share one table (the Transformer's shared
/// source/target embedding): the second then uses the first's parameter without listing it.
/// <para>
/// Keeps for the backward: the ids, bucketed by id on the host (<see cref="TokenBuckets"/>),
/// so the scatter-add into the table is deterministic.
/// </para>
/// </summary>
public sealed class Embedding : Module
{
    private readonly EmbeddingKernels kernels;
    private readonly TokenBuckets buckets;
    private readonly Tensor<float> output;
    private bool haveInput;

    /// <summary>A token embedding: out[b, t] = scale·weight[ids[b, t]].</summary>
    /// <param name="device">Where the table and buffers live.</param>
    /// <param name="vocabulary">V, the rows of the table.</param>
    /// <param name="dModel">E, the width of a row.</param>
    /// <param name="scale">Multiplies every row read (√d_model in the paper, 1 for none).</param>
    /// <param name="init">Seeds the table's start.</param>
    /// <param name="sharedWeight">A table [V, E] owned by another module; null to create <c>weight</c>.</param>
    /// <param name="initStd">Standard deviation of the table's normal start (1: PyTorch's).</param>
    public Embedding(ComputeDevice device, int vocabulary, int dModel, float scale, ParameterInitializer init, Parameter? sharedWeight = null, float initStd = 1f)
        : base(device)
    {
        ArgumentNullException.ThrowIfNull(init);
        Require.Positive(vocabulary, nameof(vocabulary));
        Require.Positive(dModel, nameof(dModel));
        Vocabulary = vocabulary;
        DModel = dModel;
        Scale = scale;
        if (sharedWeight is null)
        {
            Weight = Parameter("weight", [vocabulary, dModel], decay: false);
            init.Normal(Weight, initStd);
        }
        else
        {
            if (sharedWeight.Shape.Count != 2 || sharedWeight.Shape[0] != vocabulary || sharedWeight.Shape[1] != dModel)
                throw new ArgumentException($"Shared table {sharedWeight} must have shape [{vocabulary}, {dModel}].", nameof(sharedWeight));
            Weight = sharedWeight;
        }
        kernels = device.Kernels<EmbeddingKernels>();
        buckets = new TokenBuckets(device);
        output = Buffer<float>(1);
    }

    /// <summary>V.</summary>
    public int Vocabulary { get; }

    /// <summary>E, the model width d_model.</summary>
    public int DModel { get; }

    /// <summary>The factor on every looked-up row (√d_model in the paper, 1 otherwise).</summary>
    public float Scale { get; }

    /// <summary>Learnable scalars of an own table [V, E].</summary>
    internal static long ParameterCount(int vocabulary, int dModel) => (long)vocabulary * dModel;

    /// <summary>Device bytes of its output [rows, E] after a lookup of <paramref name="rows"/> ids.</summary>
    internal static long ActivationBytes(long rows, int dModel) => sizeof(float) * rows * dModel;

    /// <summary>Device bytes outside its buffers: the token buckets of <paramref name="rows"/> ids (<see cref="TokenBuckets.DeviceBytes"/>).</summary>
    internal static long ScratchBytes(long rows) => TokenBuckets.DeviceBytes(rows);

    /// <summary>The table W [V, E] (possibly another module's).</summary>
    public Parameter Weight { get; }

    /// <summary>y[b, t] = W[ids[b, t]]·scale. Checks the ids on the host and uploads them. // ids [B, T] → y [B, T, E]</summary>
    /// <exception cref="ArgumentException">An id is outside [0, V) (the message names the id, its position [b, t] and V).</exception>
    public Tensor<float> Forward(TokenIds ids, string name = "ids") => Lookup(ids, null, name);

    /// <summary>
    /// y[b, t] = W[ids[b, t]]·scale + PE[offset + t]: the lookup with the sinusoidal encoding of
    /// <paramref name="positions"/> added in the same pass (what <see cref="PositionalEncoding.Forward"/>
    /// after <see cref="Forward(TokenIds, string)"/> computes, with one launch and one write of
    /// [B, T, E] fewer). The backward is the lookup's: the encoding is a constant.
    /// // ids [B, T] → y [B, T, E]
    /// </summary>
    /// <exception cref="ArgumentException">An id is outside [0, V), the encoding is for another width, or offset + T exceeds its max_seq_len.</exception>
    public Tensor<float> Forward(TokenIds ids, PositionalEncoding positions, int positionOffset = 0, string name = "ids")
    {
        ArgumentNullException.ThrowIfNull(ids);
        ArgumentNullException.ThrowIfNull(positions);
        if (positions.DModel != DModel)
            throw new ArgumentException($"The positional encoding is {positions.DModel} wide but the embedding {DModel}.", nameof(positions));
        return Lookup(ids, positions.Positions(ids.Length, positionOffset, nameof(ids)), name);
    }

    private Tensor<float> Lookup(TokenIds ids, SinusoidalPositions? positions, string name)
    {
        ArgumentNullException.ThrowIfNull(ids);
        ids.RequireInVocabulary(Vocabulary, name);
        buckets.Build(ids.Span, Vocabulary);
        output.Resize(ids.Batch, ids.Length, DModel);
        kernels.Forward(output.View, buckets, Weight.Value.View, DModel, Scale, positions);
        haveInput = true;
        return output;
    }

    /// <summary>Accumulates dW[v] += Σ_{(b,t): ids[b,t] = v} dy[b, t]·scale. Ids get no gradient. // dy [B, T, E]</summary>
    public void Backward(Tensor<float> dOutput)
    {
        if (!haveInput)
            throw new InvalidOperationException("Embedding.Backward needs a Forward first.");
        ArgumentNullException.ThrowIfNull(dOutput);
        if (!dOutput.HasShapeOf(output))
            throw new ArgumentException($"dOutput has shape {dOutput} but the forward's output has shape {output}.", nameof(dOutput));
        kernels.Backward(Weight.Gradient.View, dOutput.View, buckets, DModel, Scale, accumulate: true);
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
            buckets.Dispose();
        base.Dispose(disposing);
    }
}
