using GpuTransformer.Kernels.Backends;
using GpuTransformer.Kernels.Reference;
using GpuTransformer.Layers;
using GpuTransformer.Tests.Infrastructure;
using Xunit;
using Activation = GpuTransformer.Kernels.Activation;

namespace GpuTransformer.Tests.Layers;

/// <summary>
/// Every layer's Backward against central differences of its own Forward
/// (<see cref="LayerGradientCheck"/>: L = Σ y·R, h = 1e-2, |Δ| ≤ 2e-3 + 1e-2·|numeric|), on the
/// CPU simulator with tiny ragged shapes: B 2, T 3, S 4, E 8, 2 heads of 4, d_ff 12, V 11.
/// Small layers are checked entry by entry; the attention, feed-forward and layer tests check every tensor along a random direction plus a few single entries.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class LayerGradientTests(Devices devices)
{
    private const int B = 2;
    private const int T = 3;
    private const int S = 4;
    private const int E = 8;
    private const int H = 2;
    private const int F = 12;
    private const int V = 11;

    private ComputeDevice Device => devices.Get("cpu");

    private Tensor<float> Input(int seed, params int[] shape) =>
        Tensor<float>.FromArray(Device, LayerGradientCheck.Random(seed, shape.Aggregate(1, (a, b) => a * b)), shape);

    private static LayerConfig Config(bool normFirst, Activation activation = Activation.GeluExact, float dropout = 0f) =>
        new(E, H, F, activation, dropout, 1e-5f, normFirst);

    [Fact]
    public void Linear_input_weight_and_bias_gradients()
    {
        using var layer = new Linear(Device, E, 5, bias: true, new ParameterInitializer(1));
        using var x = Input(2, B, T, E);
        Tensor<float>? dx = null;
        new LayerGradientCheck(Device, () => layer.Forward(x))
            .Probe("x", x, () => dx!.ToArray(), entries: -1)
            .Probe(layer.Weight, entries: -1)
            .Probe(layer.Bias!, entries: -1)
            .Run(layer, dy => dx = layer.Backward(dy));
    }

    [Fact]
    public void Linear_with_a_shared_weight_accumulates_into_the_owner()
    {
        var init = new ParameterInitializer(3);
        using var embedding = new Embedding(Device, V, E, 1f, init);
        using var head = new Linear(Device, E, V, bias: false, init, embedding.Weight);
        Assert.Empty(head.Parameters());
        using var x = Input(4, B, T, E);
        new LayerGradientCheck(Device, () => head.Forward(x))
            .Probe(embedding.Weight, entries: -1)
            .Run(embedding, dy => head.Backward(dy));
    }

    [Fact]
    public void Embedding_with_scale_accumulates_rows_of_repeated_ids()
    {
        using var layer = new Embedding(Device, V, E, MathF.Sqrt(E), new ParameterInitializer(5));
        var ids = new TokenIds(new[] { 3, 0, 3, 10, 3, 7 }, B, T);
        var output = layer.Forward(ids).ToArray();
        var table = layer.Weight.Value.ToArray();
        Assert.Equal(table[(3 * E) + 1] * MathF.Sqrt(E), output[1], 5);
        new LayerGradientCheck(Device, () => layer.Forward(ids))
            .Probe(layer.Weight, entries: -1)
            .Run(layer, layer.Backward);
    }

    [Fact]
    public void Positional_encoding_adds_the_table_at_the_offset_and_passes_gradients_through()
    {
        using var layer = new PositionalEncoding(Device, E, maxLength: 9);
        using var x = Input(6, B, T, E);
        var offset = 5;
        var y = layer.Forward(x, offset).ToArray();
        TestTensors.AssertClose(PositionalEncodingReference.Forward(x.ToArray(), B, T, E, positionOffset: offset), y, 1e-6, 1e-6, "x + PE[5 …]");
        Tensor<float>? dx = null;
        new LayerGradientCheck(Device, () => layer.Forward(x, offset))
            .Probe("x", x, () => dx!.ToArray(), entries: -1)
            .Run(layer, dy => dx = layer.Backward(dy));
        Assert.Throws<ArgumentException>(() => _ = layer.Forward(x, positionOffset: 7));
    }

    [Fact]
    public void LayerNorm_input_weight_and_bias_gradients()
    {
        using var layer = new LayerNorm(Device, E);
        ParameterInitializer.Constant(layer.Weight, 1.3f);
        new ParameterInitializer(7).Uniform(layer.Bias, 0.5);
        using var x = Input(8, B, T, E);
        Tensor<float>? dx = null;
        new LayerGradientCheck(Device, () => layer.Forward(x))
            .Probe("x", x, () => dx!.ToArray(), entries: -1)
            .Probe(layer.Weight, entries: -1)
            .Probe(layer.Bias, entries: -1)
            .Run(layer, dy => dx = layer.Backward(dy));
    }

    [Fact]
    public void Dropout_in_training_mode_backpropagates_through_its_mask()
    {
        var dropoutStream = new DropoutStream(9);
        using var layer = new Dropout(Device, 0.4f, dropoutStream);
        using var x = Input(10, B, T, E);
        var start = dropoutStream.State;
        Tensor<float>? dx = null;
        new LayerGradientCheck(Device, () =>
            {
                dropoutStream.State = start;
                return layer.Forward(x);
            })
            .Probe("x", x, () => dx!.ToArray(), entries: -1)
            .Run(layer, dy => dx = layer.Backward(dy));
        var kept = layer.Forward(x).ToArray().Count(v => v != 0);
        Assert.InRange(kept, 1, (B * T * E) - 1);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Self_attention_with_key_padding_gradients(bool causal)
    {
        using var layer = new SelfAttention(Device, E, H, causal, new ParameterInitializer(11));
        RandomiseBiases(layer, 12);
        using var x = Input(13, B, T, E);
        using var padding = Tensor<int>.FromArray(Device, [0, 0, 0, 0, 0, 1], B, T);
        Tensor<float>? dx = null;
        new LayerGradientCheck(Device, () => layer.Forward(x, padding))
            .Probe("x", x, () => dx!.ToArray())
            .ProbeParameters(layer, entries: 3)
            .Run(layer, dy => dx = layer.Backward(dy));
    }

    [Fact]
    public void Cross_attention_with_memory_padding_gradients_of_query_memory_and_parameters()
    {
        using var layer = new CrossAttention(Device, E, H, new ParameterInitializer(15));
        RandomiseBiases(layer, 16);
        using var query = Input(17, B, T, E);
        using var memory = Input(18, B, S, E);
        using var padding = Tensor<int>.FromArray(Device, [0, 0, 0, 0, 0, 0, 1, 1], B, S);
        (Tensor<float> Query, Tensor<float> Memory)? d = null;
        new LayerGradientCheck(Device, () => layer.Forward(query, memory, padding))
            .Probe("query", query, () => d!.Value.Query.ToArray())
            .Probe("memory", memory, () => d!.Value.Memory.ToArray())
            .ProbeParameters(layer, entries: 3)
            .Run(layer, dy => d = layer.Backward(dy));
        // Padded memory positions get no gradient.
        var dMemory = d!.Value.Memory.ToArray();
        Assert.All(dMemory.Skip((S + 2) * E), v => Assert.Equal(0f, v));
    }

    [Theory]
    [InlineData(Activation.Relu)]
    [InlineData(Activation.GeluExact)]
    [InlineData(Activation.Gelu)]
    public void Feed_forward_gradients(Activation activation)
    {
        using var layer = new FeedForward(Device, E, F, activation, 0f, new DropoutStream(0), new ParameterInitializer(20));
        using var x = Input(21, B, T, E);
        Tensor<float>? dx = null;
        var check = new LayerGradientCheck(Device, () => layer.Forward(x))
        {
            // ReLU is piecewise linear: a difference is exact unless a pre-activation changes sign in between.
            Pattern = activation == Activation.Relu ? () => layer.PreActivation!.ToArray().Select(v => v > 0 ? 1 : 0).ToArray() : null,
        };
        check.Probe("x", x, () => dx!.ToArray())
            .ProbeParameters(layer, entries: 3)
            .Run(layer, dy => dx = layer.Backward(dy));
        Assert.Equal(["linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"], layer.Parameters().Select(p => p.Name));
    }

    [Theory]
    [InlineData(false, 0f)]
    [InlineData(true, 0f)]
    [InlineData(false, 0.25f)]
    [InlineData(true, 0.25f)]
    public void Encoder_layer_gradients_post_and_pre_LN_with_and_without_dropout(bool normFirst, float dropout)
    {
        var dropoutStream = new DropoutStream(23);
        using var layer = new EncoderLayer(Device, Config(normFirst, Activation.Gelu, dropout), causal: false, dropoutStream, new ParameterInitializer(24));
        RandomiseBiases(layer, 25);
        using var x = Input(26, B, T, E);
        using var padding = Tensor<int>.FromArray(Device, [0, 0, 1, 0, 0, 0], B, T);
        var start = dropoutStream.State;
        Tensor<float>? dx = null;
        new LayerGradientCheck(Device, () =>
            {
                dropoutStream.State = start;
                return layer.Forward(x, padding);
            })
            .Probe("x", x, () => dx!.ToArray())
            .ProbeParameters(layer, entries: 0)
            .Run(layer, dy => dx = layer.Backward(dy));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Decoder_layer_gradients_of_input_memory_and_parameters_post_and_pre_LN(bool normFirst)
    {
        var dropoutStream = new DropoutStream(28);
        using var layer = new DecoderLayer(Device, Config(normFirst, Activation.GeluExact, 0.2f), dropoutStream, new ParameterInitializer(29));
        RandomiseBiases(layer, 30);
        using var x = Input(31, B, T, E);
        using var memory = Input(32, B, S, E);
        using var targetPadding = Tensor<int>.FromArray(Device, [0, 0, 0, 0, 0, 1], B, T);
        using var memoryPadding = Tensor<int>.FromArray(Device, [0, 0, 0, 1, 0, 0, 0, 0], B, S);
        var start = dropoutStream.State;
        (Tensor<float> Input, Tensor<float> Memory)? d = null;
        new LayerGradientCheck(Device, () =>
            {
                dropoutStream.State = start;
                return layer.Forward(x, memory, targetPadding, memoryPadding);
            })
            .Probe("x", x, () => d!.Value.Input.ToArray())
            .Probe("memory", memory, () => d!.Value.Memory.ToArray())
            .ProbeParameters(layer, entries: 0)
            .Run(layer, dy => d = layer.Backward(dy));
    }

    [Fact]
    public void Decoder_stack_sums_the_memory_gradients_of_its_layers()
    {
        var dropoutStream = new DropoutStream(34);
        using var decoder = new Decoder(Device, Config(normFirst: false), 2, dropoutStream, new ParameterInitializer(35));
        RandomiseBiases(decoder, 36);
        using var x = Input(37, B, T, E);
        using var memory = Input(38, B, S, E);
        (Tensor<float> Input, Tensor<float> Memory)? d = null;
        new LayerGradientCheck(Device, () => decoder.Forward(x, memory))
            .Probe("x", x, () => d!.Value.Input.ToArray())
            .Probe("memory", memory, () => d!.Value.Memory.ToArray())
            .Probe(decoder.Layers[0].CrossAttention.InProjWeight, entries: 0)
            .Probe(decoder.Norm.Weight, entries: 0)
            .Run(decoder, dy => d = decoder.Backward(dy));
    }

    [Fact]
    public void Cross_entropy_loss_gradient_with_ignored_targets_and_label_smoothing()
    {
        using var loss = new CrossEntropyLoss(Device, ignoreIndex: 0, labelSmoothing: 0.1f);
        var targets = new TokenIds(new[] { 4, 0, 7, 1, 0, 9 }, B, T);
        var values = LayerGradientCheck.Random(40, B * T * V, 3f);
        using var logits = Tensor<float>.FromArray(Device, values, B, T, V);
        var value = loss.Forward(logits, targets);
        Assert.Equal(4, loss.CountedTargets);
        var gradient = loss.Backward().ToArray();
        Assert.Equal(Expected(values), value, 5);

        var h = 1e-3;
        for (var i = 0; i < values.Length; i += 5)
        {
            var up = (float[])values.Clone();
            var down = (float[])values.Clone();
            up[i] += (float)h;
            down[i] -= (float)h;
            var numeric = (Expected(up) - Expected(down)) / (2 * h);
            Assert.True(Math.Abs(numeric - gradient[i]) <= 1e-3, $"dlogits[{i}]: {gradient[i]} vs {numeric}");
        }

        // The loss in double: mean over counted rows of lse − (1 − ε)·z_t − ε/V·Σz.
        double Expected(float[] z)
        {
            var sum = 0.0;
            for (var n = 0; n < B * T; n++)
            {
                var t = targets.Span[n];
                if (t == 0)
                    continue;
                var row = z.AsSpan(n * V, V).ToArray().Select(v => (double)v).ToArray();
                var max = row.Max();
                var lse = max + Math.Log(row.Sum(v => Math.Exp(v - max)));
                sum += lse - (0.9 * row[t]) - (0.1 / V * row.Sum());
            }
            return sum / 4;
        }
    }

    /// <summary>
    /// Adds U(±0.3) to every 1-D parameter: zero biases and unit norm weights would hide a
    /// gradient that goes to the wrong place (as the parity goldens do).
    /// </summary>
    internal static void RandomiseBiases(Module module, int seed)
    {
        var random = new Random(seed);
        foreach (var parameter in module.Parameters().Where(p => p.Shape.Count == 1))
        {
            var values = parameter.Value.ToArray();
            for (var i = 0; i < values.Length; i++)
                values[i] += (float)(((random.NextDouble() * 2) - 1) * 0.3);
            parameter.Value.CopyFrom(values);
        }
    }
}
