namespace GpuTransformer.Tests.Layers;

/// <summary>
/// <see cref="ParameterPack"/>: packing keeps every value and gradient, lays the weight-decayed
/// parameters first at aligned offsets with zero gaps, makes the parameters' tensors slices of the
/// two buffers (a write through either is seen by the other), zeroes every gradient in one memset,
/// refuses a parameter already packed and a packed tensor that would grow, and on dispose gives the
/// parameters their own buffers back with their values. The models come packed.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class ParameterPackTests(Devices devices)
{
    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Packing_keeps_values_and_makes_the_tensors_slices_of_two_buffers(string backend)
    {
        var device = devices.Get(backend);
        using var first = new Linear(device, 5, 3, bias: true, new ParameterInitializer(1));  // weight 15 (decay), bias 3
        using var norm = new LayerNorm(device, 7);                                              // weight 7, bias 7
        using var second = new Linear(device, 3, 2, bias: true, new ParameterInitializer(2));  // weight 6 (decay), bias 2
        var parameters = first.Parameters().Concat(norm.Parameters()).Concat(second.Parameters()).ToArray();
        var values = parameters.Select(p => p.Value.ToArray()).ToArray();
        for (var i = 0; i < parameters.Length; i++)
            parameters[i].Gradient.CopyFrom(TestTensors.Random(10 + i, parameters[i].Gradient.Length));
        var gradients = parameters.Select(p => p.Gradient.ToArray()).ToArray();

        using (var pack = new ParameterPack(parameters))
        {
            // Decayed weights first, in the given order, each at a multiple of 16 floats.
            Assert.Equal([first.Weight, second.Weight], pack.Parameters.Take(2));
            Assert.Equal(16 + 16, pack.DecayedLength);
            Assert.Equal([0L, 16, 32, 48, 64, 80], pack.Parameters.Select(pack.OffsetOf));
            Assert.Equal(96, pack.Length);
            Assert.All(parameters, p => Assert.Same(pack, p.Pack));

            var packedValues = device.Download(pack.Values);
            var packedGradients = device.Download(pack.Gradients);
            for (var i = 0; i < parameters.Length; i++)
            {
                var offset = (int)pack.OffsetOf(parameters[i]);
                Assert.Equal(values[i], parameters[i].Value.ToArray());
                Assert.Equal(values[i], packedValues.AsSpan(offset, values[i].Length).ToArray());
                Assert.Equal(gradients[i], packedGradients.AsSpan(offset, gradients[i].Length).ToArray());
            }
            var used = parameters.SelectMany(p => Enumerable.Range((int)pack.OffsetOf(p), p.Value.Length)).ToHashSet();
            Assert.All(Enumerable.Range(0, 96).Where(i => !used.Contains(i)), i => Assert.Equal(0f, packedValues[i] + packedGradients[i]));

            // A write through the parameter lands in the pack, and the other way round.
            norm.Weight.Value.CopyFrom(Enumerable.Repeat(3f, 7).ToArray());
            Assert.Equal(3f, device.Download(pack.Values)[(int)pack.OffsetOf(norm.Weight) + 6]);
            pack.ZeroGradients();
            Assert.All(parameters, p => Assert.All(p.Gradient.ToArray(), g => Assert.Equal(0f, g)));
            values[2] = Enumerable.Repeat(3f, 7).ToArray();

            // One pack per parameter; a packed tensor keeps its size.
            var refused = Assert.Throws<ArgumentException>(() => new ParameterPack([norm.Bias]));
            Assert.Contains("already lives in a parameter pack", refused.Message);
            Assert.Throws<InvalidOperationException>(() => norm.Bias.Value.Resize(8));
        }

        // Unpacked: own buffers, the values written while packed kept, independent again.
        Assert.All(parameters, p => Assert.Null(p.Pack));
        for (var i = 0; i < parameters.Length; i++)
            Assert.Equal(values[i], parameters[i].Value.ToArray());
        using var again = new ParameterPack(parameters.Reverse());
        Assert.Equal([second.Weight, first.Weight], again.Parameters.Take(2));
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void A_model_comes_packed_and_zeroes_its_gradients_in_one_memset(string backend)
    {
        var device = devices.Get(backend);
        var config = new LanguageModelConfig { DModel = 8, NHead = 2, NumLayers = 1, DimFeedforward = 12, VocabularySize = 11, MaxSequenceLength = 4, PadId = -1 };
        using var model = new LanguageModel(device, config, seed: 1);
        var pack = model.PackParameters();
        Assert.Same(pack, model.PackParameters());
        Assert.All(model.Parameters(), p => Assert.Same(pack, p.Pack));
        Assert.Equal(model.Parameters().Distinct().Count(), pack.Parameters.Count);
        Assert.Equal(model.Parameters().Where(p => p.Decay).Sum(p => (p.Value.Length + 15) / 16 * 16), pack.DecayedLength);

        foreach (var parameter in model.Parameters())
            parameter.Gradient.CopyFrom(Enumerable.Repeat(1f, parameter.Gradient.Length).ToArray());
        model.ZeroGradients();
        Assert.All(device.Download(pack.Gradients), g => Assert.Equal(0f, g));
    }
}
