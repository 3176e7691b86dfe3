using Activation = GpuTransformer.Kernels.Activation;

namespace GpuTransformer.Tests.Layers;

/// <summary>
/// Every layer's Backward against central differences of its own Forward
/// (<see cref="LayerGradientCheck"/>: L = Σ y·R, h = 1e-2, |Δ| ≤ 2e-3 + 1e-2·|numeric|), on every
/// backend present with tiny ragged shapes: B 2, T 3, S 4, E 8, 2 heads of 4, d_ff 12, V 11.
/// Small layers are checked entry by entry; the attention and feed-forward tests check every
/// tensor along a random direction plus a few single entries; the encoder and decoder layers
/// every parameter along three random directions and at a random entry.
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

    public static TheoryData<string, bool> BackendsAndCausal => Devices.BackendsTimes(false, true);

    public static TheoryData<string, bool> BackendsAndNormFirst => Devices.BackendsTimes(false, true);

    public static TheoryData<string, Activation> BackendsAndActivations => Devices.BackendsTimes(Activation.Relu, Activation.GeluExact, Activation.Gelu);

    public static TheoryData<string, bool, float> BackendsNormFirstAndDropout => Devices.BackendsTimes((false, 0f), (true, 0f), (false, 0.25f), (true, 0.25f));

    private static Tensor<float> Input(ComputeDevice device, int seed, params int[] shape) =>
        Tensor<float>.FromArray(device, LayerGradientCheck.Random(seed, shape.Aggregate(1, (a, b) => a * b)), shape);

    private static LayerConfig Config(bool normFirst, Activation activation = Activation.GeluExact, float dropout = 0f) =>
        new(E, H, F, activation, dropout, 1e-5f, normFirst);

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Linear_input_weight_and_bias_gradients(string backend)
    {
        var device = devices.Get(backend);
        using var layer = new Linear(device, E, 5, bias: true, new ParameterInitializer(1));
        using var x = Input(device, 2, B, T, E);
        Tensor<float>? dx = null;
        new LayerGradientCheck(device, () => layer.Forward(x))
            .Probe("x", x, () => dx!.ToArray(), entries: -1)
            .Probe(layer.Weight, entries: -1)
            .Probe(layer.Bias!, entries: -1)
            .Run(layer, dy => dx = layer.Backward(dy));
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Linear_with_a_shared_weight_accumulates_into_the_owner(string backend)
    {
        var device = devices.Get(backend);
        var init = new ParameterInitializer(3);
        using var embedding = new Embedding(device, V, E, 1f, init);
        using var head = new Linear(device, E, V, bias: false, init, embedding.Weight);
        Assert.Empty(head.Parameters());
        using var x = Input(device, 4, B, T, E);
        new LayerGradientCheck(device, () => head.Forward(x))
            .Probe(embedding.Weight, entries: -1)
            .Run(embedding, dy => head.Backward(dy));
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Embedding_with_scale_accumulates_rows_of_repeated_ids(string backend)
    {
        var device = devices.Get(backend);
        using var layer = new Embedding(device, V, E, MathF.Sqrt(E), new ParameterInitializer(5));
        var ids = new TokenIds(new[] { 3, 0, 3, 10, 3, 7 }, B, T);
        var output = layer.Forward(ids).ToArray();
        var table = layer.Weight.Value.ToArray();
        Assert.Equal(table[(3 * E) + 1] * MathF.Sqrt(E), output[1], 5);
        new LayerGradientCheck(device, () => layer.Forward(ids))
            .Probe(layer.Weight, entries: -1)
            .Run(layer, layer.Backward);
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Embedding_with_positions_adds_the_encoding_in_the_lookup_as_the_two_layers_do(string backend)
    {
        var device = devices.Get(backend);
        using var layer = new Embedding(device, V, E, MathF.Sqrt(E), new ParameterInitializer(5));
        using var positions = new PositionalEncoding(device, E, maxLength: 9);
        var ids = new TokenIds(new[] { 3, 0, 3, 10, 3, 7 }, B, T);
        const int offset = 5;
        var fused = layer.Forward(ids, positions, offset).ToArray();
        var separate = positions.Forward(layer.Forward(ids), offset).ToArray();
        Assert.Equal(separate, fused); // the same float operations in the same order
        var expected = EmbeddingReference.Forward(ids.Span, layer.Weight.Value.ToArray(), E, MathF.Sqrt(E), new SinusoidalPositions(T, offset));
        TestTensors.AssertClose(expected, layer.Forward(ids, positions, offset).ToArray(), 1e-6, 1e-6, "E[ids]·√E + PE[5 …]");
        new LayerGradientCheck(device, () => layer.Forward(ids, positions, offset))
            .Probe(layer.Weight, entries: -1)
            .Run(layer, layer.Backward);

        var beyond = Assert.Throws<ArgumentException>(() => layer.Forward(ids, positions, positionOffset: 7));
        Assert.Contains("Positions 7 … 9 exceed max_seq_len 9", beyond.Message);
        using var narrow = new PositionalEncoding(device, E - 2, maxLength: 9);
        Assert.Contains($"is {E - 2} wide but the embedding {E}", Assert.Throws<ArgumentException>(() => layer.Forward(ids, narrow)).Message);
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Positional_encoding_adds_the_table_at_the_offset_and_passes_gradients_through(string backend)
    {
        var device = devices.Get(backend);
        using var layer = new PositionalEncoding(device, E, maxLength: 9);
        using var x = Input(device, 6, B, T, E);
        var offset = 5;
        var y = layer.Forward(x, offset).ToArray();
        TestTensors.AssertClose(PositionalEncodingReference.Forward(x.ToArray(), B, T, E, positionOffset: offset), y, 1e-6, 1e-6, "x + PE[5 …]");
        Tensor<float>? dx = null;
        new LayerGradientCheck(device, () => layer.Forward(x, offset))
            .Probe("x", x, () => dx!.ToArray(), entries: -1)
            .Run(layer, dy => dx = layer.Backward(dy));
        Assert.Throws<ArgumentException>(() => _ = layer.Forward(x, positionOffset: 7));
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void LayerNorm_input_weight_and_bias_gradients(string backend)
    {
        var device = devices.Get(backend);
        using var layer = new LayerNorm(device, E);
        ParameterInitializer.Constant(layer.Weight, 1.3f);
        new ParameterInitializer(7).Uniform(layer.Bias, 0.5);
        using var x = Input(device, 8, B, T, E);
        Tensor<float>? dx = null;
        new LayerGradientCheck(device, () => layer.Forward(x))
            .Probe("x", x, () => dx!.ToArray(), entries: -1)
            .Probe(layer.Weight, entries: -1)
            .Probe(layer.Bias, entries: -1)
            .Run(layer, dy => dx = layer.Backward(dy));
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Dropout_in_training_mode_backpropagates_through_its_mask(string backend)
    {
        var device = devices.Get(backend);
        var dropoutStream = new DropoutStream(9);
        using var layer = new Dropout(device, 0.4f, dropoutStream);
        using var x = Input(device, 10, B, T, E);
        var start = dropoutStream.State;
        Tensor<float>? dx = null;
        new LayerGradientCheck(device, () =>
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
    [MemberData(nameof(BackendsAndCausal))]
    public void Self_attention_with_key_padding_gradients(string backend, bool causal)
    {
        var device = devices.Get(backend);
        using var layer = new SelfAttention(device, E, H, causal, new ParameterInitializer(11));
        RandomiseBiases(layer, 12);
        using var x = Input(device, 13, B, T, E);
        using var padding = Tensor<int>.FromArray(device, [0, 0, 0, 0, 0, 1], B, T);
        Tensor<float>? dx = null;
        new LayerGradientCheck(device, () => layer.Forward(x, padding))
            .Probe("x", x, () => dx!.ToArray())
            .ProbeParameters(layer, entries: 3)
            .Run(layer, dy => dx = layer.Backward(dy));
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Cross_attention_with_memory_padding_gradients_of_query_memory_and_parameters(string backend)
    {
        var device = devices.Get(backend);
        using var layer = new CrossAttention(device, E, H, new ParameterInitializer(15));
        RandomiseBiases(layer, 16);
        using var query = Input(device, 17, B, T, E);
        using var memory = Input(device, 18, B, S, E);
        using var padding = Tensor<int>.FromArray(device, [0, 0, 0, 0, 0, 0, 1, 1], B, S);
        (Tensor<float> Query, Tensor<float> Memory)? d = null;
        new LayerGradientCheck(device, () => layer.Forward(query, memory, padding))
            .Probe("query", query, () => d!.Value.Query.ToArray())
            .Probe("memory", memory, () => d!.Value.Memory.ToArray())
            .ProbeParameters(layer, entries: 3)
            .Run(layer, dy => d = layer.Backward(dy));
        // Padded memory positions get no gradient.
        var dMemory = d!.Value.Memory.ToArray();
        Assert.All(dMemory.Skip((S + 2) * E), v => Assert.Equal(0f, v));
    }

    [Theory]
    [MemberData(nameof(BackendsAndActivations))]
    public void Feed_forward_gradients(string backend, Activation activation)
    {
        var device = devices.Get(backend);
        using var layer = new FeedForward(device, E, F, activation, 0f, new DropoutStream(0), new ParameterInitializer(20));
        using var x = Input(device, 21, B, T, E);
        Tensor<float>? dx = null;
        var check = new LayerGradientCheck(device, () => layer.Forward(x))
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
    [MemberData(nameof(BackendsNormFirstAndDropout))]
    public void Encoder_layer_gradients_post_and_pre_LN_with_and_without_dropout(string backend, bool normFirst, float dropout)
    {
        var device = devices.Get(backend);
        var dropoutStream = new DropoutStream(23);
        using var layer = new EncoderLayer(device, Config(normFirst, Activation.Gelu, dropout), causal: false, dropoutStream, new ParameterInitializer(24));
        RandomiseBiases(layer, 25);
        using var x = Input(device, 26, B, T, E);
        using var padding = Tensor<int>.FromArray(device, [0, 0, 1, 0, 0, 0], B, T);
        var start = dropoutStream.State;
        Tensor<float>? dx = null;
        var check = new LayerGradientCheck(device, () =>
        {
            dropoutStream.State = start;
            return layer.Forward(x, padding);
        })
        {
            Directions = 3,
        };
        check.Probe("x", x, () => dx!.ToArray())
            .ProbeParameters(layer, entries: 1)
            .Run(layer, dy => dx = layer.Backward(dy));
    }

    [Theory]
    [MemberData(nameof(BackendsAndNormFirst))]
    public void Decoder_layer_gradients_of_input_memory_and_parameters_post_and_pre_LN(string backend, bool normFirst)
    {
        var device = devices.Get(backend);
        var dropoutStream = new DropoutStream(28);
        using var layer = new DecoderLayer(device, Config(normFirst, Activation.GeluExact, 0.2f), dropoutStream, new ParameterInitializer(29));
        RandomiseBiases(layer, 30);
        using var x = Input(device, 31, B, T, E);
        using var memory = Input(device, 32, B, S, E);
        using var targetPadding = Tensor<int>.FromArray(device, [0, 0, 0, 0, 0, 1], B, T);
        using var memoryPadding = Tensor<int>.FromArray(device, [0, 0, 0, 1, 0, 0, 0, 0], B, S);
        var start = dropoutStream.State;
        (Tensor<float> Input, Tensor<float> Memory)? d = null;
        var check = new LayerGradientCheck(device, () =>
        {
            dropoutStream.State = start;
            return layer.Forward(x, memory, targetPadding, memoryPadding);
        })
        {
            Directions = 3,
        };
        check.Probe("x", x, () => d!.Value.Input.ToArray())
            .Probe("memory", memory, () => d!.Value.Memory.ToArray())
            .ProbeParameters(layer, entries: 1)
            .Run(layer, dy => d = layer.Backward(dy));
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Decoder_stack_sums_the_memory_gradients_of_its_layers(string backend)
    {
        var device = devices.Get(backend);
        var dropoutStream = new DropoutStream(34);
        using var decoder = new Decoder(device, Config(normFirst: false), 2, dropoutStream, new ParameterInitializer(35));
        RandomiseBiases(decoder, 36);
        using var x = Input(device, 37, B, T, E);
        using var memory = Input(device, 38, B, S, E);
        (Tensor<float> Input, Tensor<float> Memory)? d = null;
        new LayerGradientCheck(device, () => decoder.Forward(x, memory))
            .Probe("x", x, () => d!.Value.Input.ToArray())
            .Probe("memory", memory, () => d!.Value.Memory.ToArray())
            .Probe(decoder.Layers[0].CrossAttention.InProjWeight, entries: 0)
            .Probe(decoder.Norm.Weight, entries: 0)
            .Run(decoder, dy => d = decoder.Backward(dy));
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Cross_entropy_loss_gradient_with_ignored_targets_and_label_smoothing(string backend)
    {
        var device = devices.Get(backend);
        using var loss = new CrossEntropyLoss(device, ignoreIndex: 0, labelSmoothing: 0.1f);
        var targets = new TokenIds(new[] { 4, 0, 7, 1, 0, 9 }, B, T);
        var values = LayerGradientCheck.Random(40, B * T * V, 3f);
        using var logits = Tensor<float>.FromArray(device, values, B, T, V);
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
