using GpuTransformer.Kernels;
using GpuTransformer.Kernels.Backends;

namespace GpuTransformer.Layers;

/// <summary>
/// The paper's sinusoidal positional encoding added to the embeddings:
/// y[b, t] = x[b, t] + PE[offset + t], PE[p, 2i] = sin(p/10000^(2i/d_model)), PE[p, 2i+1] = cos(…).
/// No parameters (the table is computed, never stored). <c>offset</c> is the position of the
/// first token: 0 for a whole sequence, the cache length when decoding incrementally.
/// The models add it inside the embedding lookup (<see cref="Embedding.Forward(TokenIds, PositionalEncoding, int, string)"/>:
/// one pass over [B, T, E] instead of two); <see cref="Forward"/> adds it to any tensor.
/// <para>Keeps nothing: the backward of adding a constant is the identity.</para>
/// </summary>
public sealed class PositionalEncoding : Module
{
    private readonly PositionalEncodingKernels kernels;
    private readonly Tensor<float> output;

    /// <summary>The sinusoidal positional encoding added to the embeddings.</summary>
    /// <param name="device">Where the buffers live.</param>
    /// <param name="dModel">E, the width of a token vector.</param>
    /// <param name="maxLength">max_seq_len: positions from this on are refused.</param>
    public PositionalEncoding(ComputeDevice device, int dModel, int maxLength)
        : base(device)
    {
        Require.Positive(dModel, nameof(dModel));
        Require.Positive(maxLength, nameof(maxLength));
        DModel = dModel;
        MaxLength = maxLength;
        kernels = device.Kernels<PositionalEncodingKernels>();
        output = Buffer<float>(1);
    }

    /// <summary>E, the model width d_model.</summary>
    public int DModel { get; }

    /// <summary>max_seq_len.</summary>
    public int MaxLength { get; }

    /// <summary>y = x + PE[offset …]. // x [B, T, E] → y [B, T, E]</summary>
    /// <exception cref="ArgumentException">x is not [B, T, E], or offset + T exceeds max_seq_len.</exception>
    public Tensor<float> Forward(Tensor<float> x, int positionOffset = 0)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (x.Rank != 3 || x.Dim(2) != DModel)
            throw new ArgumentException($"x has shape {x} but positional encoding takes [B, T, {DModel}].", nameof(x));
        RequirePositions(x.Dim(1), positionOffset, nameof(x));
        output.ResizeLike(x, DModel);
        kernels.Forward(output.View, x.View, x.Dim(0), x.Dim(1), DModel, 1f, positionOffset);
        return output;
    }

    /// <summary>Positions offset … offset + length − 1 for a kernel that adds the encoding itself.</summary>
    /// <exception cref="ArgumentException">The positions exceed max_seq_len.</exception>
    internal SinusoidalPositions Positions(int length, int positionOffset, string parameterName)
    {
        RequirePositions(length, positionOffset, parameterName);
        return new SinusoidalPositions(length, positionOffset);
    }

    private void RequirePositions(int length, int positionOffset, string parameterName)
    {
        if (positionOffset < 0 || positionOffset + length > MaxLength)
            throw new ArgumentException($"Positions {positionOffset} … {positionOffset + length - 1} exceed max_seq_len {MaxLength}.", parameterName);
    }

    /// <summary>dx = dy (the encoding is a constant): returns <paramref name="dOutput"/> itself.</summary>
    public Tensor<float> Backward(Tensor<float> dOutput)
    {
        ArgumentNullException.ThrowIfNull(dOutput);
        return dOutput;
    }
}
