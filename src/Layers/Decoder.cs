using System.Globalization;
using GpuTransformer.Kernels;
using GpuTransformer.Kernels.Backends;

namespace GpuTransformer.Layers;

/// <summary>
/// PyTorch's <c>nn.TransformerDecoder</c> as <c>nn.Transformer</c> builds it: N decoder layers
/// (<c>layers.{i}</c>) reading one encoder memory, and a final LayerNorm (<c>norm</c>).
/// <para>Keeps for the backward: the sum of the layers' memory gradients.</para>
/// </summary>
public sealed class Decoder : Module
{
    private readonly DecoderLayer[] layers;
    private readonly ElementwiseKernels elementwise;
    private readonly Tensor<float> memoryGradient;

    /// <summary><paramref name="layerCount"/> layers and the final norm.</summary>
    public Decoder(ComputeDevice device, LayerConfig config, int layerCount, DropoutStream dropoutStream, ParameterInitializer init)
        : base(device)
    {
        ArgumentNullException.ThrowIfNull(config);
        layers = new DecoderLayer[layerCount];
        for (var i = 0; i < layerCount; i++)
            layers[i] = Child(string.Create(CultureInfo.InvariantCulture, $"layers.{i}"), new DecoderLayer(device, config, dropoutStream, init));
        Norm = Child("norm", new LayerNorm(device, config.DModel, config.LayerNormEps));
        elementwise = device.Kernels<ElementwiseKernels>();
        memoryGradient = Buffer<float>(1);
    }

    /// <summary><c>layers.{i}</c>.</summary>
    public IReadOnlyList<DecoderLayer> Layers => layers;

    /// <summary>The final <c>norm</c>.</summary>
    public LayerNorm Norm { get; }

    /// <summary>Learnable scalars of <paramref name="layerCount"/> layers and the final norm.</summary>
    internal static long ParameterCount(LayerConfig config, int layerCount) =>
        (layerCount * DecoderLayer.ParameterCount(config)) + LayerNorm.ParameterCount(config.DModel);

    /// <summary>Device bytes of its buffers after a step over target [<paramref name="batch"/>, <paramref name="length"/>] and memory [B, <paramref name="memoryLength"/>] (+ the summed dMemory when training).</summary>
    internal static long ActivationBytes(LayerConfig config, int layerCount, int batch, int length, int memoryLength, bool training, int unfusedAttentionMaxLength) =>
        (layerCount * DecoderLayer.ActivationBytes(config, batch, length, memoryLength, training, unfusedAttentionMaxLength))
        + LayerNorm.ActivationBytes((long)batch * length, config.DModel, training)
        + (training ? sizeof(float) * (long)batch * memoryLength * config.DModel : 0);

    /// <summary>
    /// y = norm(layer_N(… layer_1(x, memory), memory)).
    /// // x [B, T, E], memory [B, S, E], targetPadding [B, T], memoryPadding [B, S] → [B, T, E]
    /// </summary>
    public Tensor<float> Forward(Tensor<float> x, Tensor<float> memory, Tensor<int>? targetPadding = null, Tensor<int>? memoryPadding = null)
    {
        foreach (var layer in layers)
            x = layer.Forward(x, memory, targetPadding, memoryPadding);
        return Norm.Forward(x);
    }

    /// <summary>
    /// dx and dMemory (summed over the layers, all of which read the memory), accumulating every
    /// parameter gradient. // dy [B, T, E] → (dx [B, T, E], dMemory [B, S, E])
    /// </summary>
    public (Tensor<float> Input, Tensor<float> Memory) Backward(Tensor<float> dOutput)
    {
        var dx = Norm.Backward(dOutput);
        for (var i = layers.Length - 1; i >= 0; i--)
        {
            (dx, var dMemory) = layers[i].Backward(dx);
            if (i == layers.Length - 1)
                memoryGradient.ResizeLike(dMemory, dMemory.Dim(-1)).CopyFrom(dMemory);
            else
                elementwise.AddInto(memoryGradient.View, dMemory.View, dMemory.Length);
        }
        return (dx, memoryGradient);
    }

    /// <summary>Forward for new target positions only, from <paramref name="cache"/> (no backward). // x [B, Tn, E] → [B, Tn, E]</summary>
    internal Tensor<float> ForwardCached(Tensor<float> x, KeyValueCache cache, Tensor<int>? targetPadding)
    {
        for (var i = 0; i < layers.Length; i++)
            x = layers[i].ForwardCached(x, cache, i, targetPadding);
        return Norm.Forward(x);
    }
}
