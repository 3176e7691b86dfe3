using System.Globalization;
using GpuTransformer.Kernels.Backends;

namespace GpuTransformer.Layers;

/// <summary>
/// PyTorch's <c>nn.TransformerEncoder</c> as <c>nn.Transformer</c> builds it: N encoder layers
/// (<c>layers.{i}</c>) and a final LayerNorm (<c>norm</c>; nn.Transformer always has it, post-LN too).
/// </summary>
public sealed class Encoder : Module
{
    private readonly EncoderLayer[] layers;

    /// <summary><paramref name="layerCount"/> layers and the final norm.</summary>
    public Encoder(ComputeDevice device, LayerConfig config, int layerCount, DropoutStream dropoutStream, ParameterInitializer init)
        : base(device)
    {
        ArgumentNullException.ThrowIfNull(config);
        layers = new EncoderLayer[layerCount];
        for (var i = 0; i < layerCount; i++)
            layers[i] = Child(string.Create(CultureInfo.InvariantCulture, $"layers.{i}"), new EncoderLayer(device, config, causal: false, dropoutStream, init));
        Norm = Child("norm", new LayerNorm(device, config.DModel, config.LayerNormEps));
    }

    /// <summary><c>layers.{i}</c>.</summary>
    public IReadOnlyList<EncoderLayer> Layers => layers;

    /// <summary>The final <c>norm</c>.</summary>
    public LayerNorm Norm { get; }

    /// <summary>Learnable scalars of <paramref name="layerCount"/> layers and the final norm.</summary>
    internal static long ParameterCount(LayerConfig config, int layerCount) =>
        (layerCount * EncoderLayer.ParameterCount(config)) + LayerNorm.ParameterCount(config.DModel);

    /// <summary>Device bytes of its buffers after a step over [<paramref name="batch"/>, <paramref name="length"/>].</summary>
    internal static long ActivationBytes(LayerConfig config, int layerCount, int batch, int length, bool training, int unfusedAttentionMaxLength) =>
        (layerCount * EncoderLayer.ActivationBytes(config, batch, length, training, unfusedAttentionMaxLength)) + LayerNorm.ActivationBytes((long)batch * length, config.DModel, training);

    /// <summary>memory = norm(layer_N(… layer_1(x))). // x [B, S, E], padding [B, S] → [B, S, E]</summary>
    public Tensor<float> Forward(Tensor<float> x, Tensor<int>? padding = null)
    {
        foreach (var layer in layers)
            x = layer.Forward(x, padding);
        return Norm.Forward(x);
    }

    /// <summary>dx, accumulating every parameter gradient. // dMemory [B, S, E] → dx [B, S, E]</summary>
    public Tensor<float> Backward(Tensor<float> dOutput)
    {
        var dx = Norm.Backward(dOutput);
        for (var i = layers.Length - 1; i >= 0; i--)
            dx = layers[i].Backward(dx);
        return dx;
    }
}
