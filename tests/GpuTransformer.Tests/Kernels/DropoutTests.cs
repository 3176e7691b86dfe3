namespace GpuTransformer.Tests.Kernels;

[Collection(DeviceCollection.Name)]
public sealed class DropoutTests(Devices devices)
{
    // The counter range crosses a 32-bit boundary, so both counter words matter.
    private const ulong Seed = 0x0123_4567_89AB_CDEF;
    private const ulong Offset = (1UL << 32) - 20;

    /// <summary>Inputs bounded away from 0, so a kept element is never 0.</summary>
    private static float[] Inputs(int seed, int count) =>
        TestTensors.Random(seed, count).Select(v => v < 0 ? v - 0.5f : v + 0.5f).ToArray();


    [Fact]
    public void Philox_matches_Random123_known_answers()
    {
        // Random123 tests/kat_vectors, "philox4x32 10": counter[4], key[2] → output[4].
        (uint[] Counter, uint[] Key, uint[] Expected)[] vectors =
        [
            ([0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
            ([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]),
            ([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0], [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]),
        ];
        foreach (var (c, k, expected) in vectors)
        {
            Assert.Equal(expected, DropoutReference.Philox4x32x10(c, k));
            var block = DropoutKernels.Philox4x32x10(c[0], c[1], c[2], c[3], k[0], k[1]);
            Assert.Equal(expected, new[] { block.X0, block.X1, block.X2, block.X3 });
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Mask_is_bit_identical_to_reference_and_values_match(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<DropoutKernels>();
        foreach (var (n, p) in new[] { (1, 0.5f), (63, 0.1f), (1000, 0.3f), (1000, 0.9f) })
        {
            var x = Inputs(n, n);
            using var input = device.Upload(x);
            using var output = device.Zeros<float>(n);
            kernels.Forward(output.View, input.View, n, p, Seed, Offset);
            var actual = device.Download(output, n);
            var mask = DropoutReference.Mask(n, p, Seed, Offset);
            Assert.Equal(mask, actual.Select(v => v != 0).ToArray());
            // x · float(1/(1−p)) vs x/(1−p) in double: two float roundings.
            TestTensors.AssertClose(DropoutReference.Apply(x, p, Seed, Offset), actual, 0, 2.5e-7, $"n={n} p={p}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Counter_is_offset_plus_index(string backend)
    {
        // A launch at offset + 5 sees the mask of the launch at offset shifted by 5; another seed differs.
        var device = devices.Get(backend);
        var kernels = device.Kernels<DropoutKernels>();
        const int n = 64;
        using var ones = device.Upload(Enumerable.Repeat(1f, n + 5).ToArray());
        using var a = device.Zeros<float>(n + 5);
        using var b = device.Zeros<float>(n);
        using var c = device.Zeros<float>(n);
        kernels.Forward(a.View, ones.View, n + 5, 0.5f, Seed, Offset);
        kernels.Forward(b.View, ones.View, n, 0.5f, Seed, Offset + 5);
        kernels.Forward(c.View, ones.View, n, 0.5f, Seed + 1, Offset + 5);
        var shifted = device.Download(a, n + 5).Skip(5).ToArray();
        Assert.Equal(Bitwise.Bits(shifted), Bitwise.Bits(device.Download(b, n)));
        Assert.NotEqual(Bitwise.Bits(shifted), Bitwise.Bits(device.Download(c, n)));
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Backward_regenerates_the_forward_mask(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<DropoutKernels>();
        const int n = 333;
        const float p = 0.4f;
        var x = Inputs(1, n);
        var dy = Inputs(2, n);
        using var input = device.Upload(x);
        using var output = device.Zeros<float>(n);
        using var gradient = device.Upload(dy);
        kernels.Forward(output.View, input.View, n, p, Seed, Offset);
        kernels.Backward(gradient.View, gradient.View, n, p, Seed, Offset); // in place
        var y = device.Download(output, n);
        var dx = device.Download(gradient, n);
        Assert.Equal(y.Select(v => v != 0), dx.Select(v => v != 0));
        TestTensors.AssertClose(DropoutReference.Apply(dy, p, Seed, Offset), dx, 0, 2.5e-7, "dx");
        // Repeating the launch gives the same bits.
        kernels.Forward(input.View, input.View, n, p, Seed, Offset);
        Assert.Equal(Bitwise.Bits(y), Bitwise.Bits(device.Download(input, n)));
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Keep_rate_is_one_minus_p(string backend)
    {
        // n Bernoulli(1 − p) draws (2^14 on the simulator, 2^20 elsewhere): allow |kept − n(1−p)| ≤ 5σ,
        // σ = √(n·p(1−p)) (false-failure odds < 1e-6 for an ideal generator; the seed is fixed, so the
        // outcome is deterministic anyway). At n = 2^20, p = 0.5 that is a keep rate of 0.5 ± 0.0025.
        var device = devices.Get(backend);
        var kernels = device.Kernels<DropoutKernels>();
        var n = device.Backend == Backend.Cpu ? 1 << 14 : 1 << 20;
        using var ones = device.Upload(Enumerable.Repeat(1f, n).ToArray());
        using var output = device.Zeros<float>(n);
        foreach (var p in new[] { 0.1f, 0.5f, 0.9f })
        {
            kernels.Forward(output.View, ones.View, n, p, Seed, Offset);
            var kept = device.Download(output, n).Count(v => v != 0);
            var sigma = Math.Sqrt(n * p * (1.0 - p));
            Assert.True(Math.Abs(kept - n * (1.0 - p)) <= 5 * sigma, $"p={p}: kept {kept} of {n}, expected {n * (1 - p):F0} ± {5 * sigma:F0}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Zero_probability_is_the_identity(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<DropoutKernels>();
        const int n = 65;
        var x = TestTensors.Random(4, n);
        using var input = device.Upload(x);
        using var output = device.Zeros<float>(n);
        kernels.Forward(output.View, input.View, n, 0f, Seed, Offset);
        Assert.Equal(Bitwise.Bits(x), Bitwise.Bits(device.Download(output, n)));
        kernels.Backward(output.View, input.View, n, 0f, Seed, Offset);
        Assert.Equal(Bitwise.Bits(x), Bitwise.Bits(device.Download(output, n)));
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Bad_arguments_throw_before_launch(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<DropoutKernels>();
        using var buffer = device.Zeros<float>(8);
        foreach (var p in new[] { 1f, 1.5f, -0.1f, float.NaN, float.PositiveInfinity })
        {
            var error = Assert.Throws<ArgumentException>(() => kernels.Forward(buffer.View, buffer.View, 8, p, 1, 0));
            Assert.Contains("[0, 1)", error.Message);
            Assert.Throws<ArgumentException>(() => kernels.Backward(buffer.View, buffer.View, 8, p, 1, 0));
        }
        Assert.Throws<ArgumentException>(() => kernels.Forward(buffer.View, buffer.View, 0, 0.1f, 1, 0));
        Assert.Throws<ArgumentException>(() => kernels.Forward(buffer.View, buffer.View, -4, 0.1f, 1, 0));
        Assert.Throws<ArgumentException>(() => kernels.Forward(buffer.View, buffer.View, 9, 0.1f, 1, 0));
        Assert.Throws<ArgumentException>(() => kernels.Forward(buffer.View.SubView(1, 7), buffer.View.SubView(0, 7), 7, 0.1f, 1, 0));
    }
}
