namespace GpuTransformer.Tests.Kernels;

[Collection(DeviceCollection.Name)]
public sealed class ElementwiseTests(Devices devices)
{
    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Add_AddInto_Scale_match_reference(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<ElementwiseKernels>();
        foreach (var n in new[] { 1, 7, 33, 1000 })
        {
            var a = TestTensors.Random(1, n);
            var b = TestTensors.Random(2, n);
            using var da = device.Upload(a);
            using var db = device.Upload(b);
            using var output = device.Zeros<float>(n);

            kernels.Add(output.View, da.View, db.View, n);
            TestTensors.AssertClose(ElementwiseReference.Add(a, b), device.Download(output, n), 0, 1e-7, $"add n={n}");

            kernels.AddInto(da.View, db.View, n, alpha: -0.5f);
            TestTensors.AssertClose(ElementwiseReference.AddInto(a, b, -0.5f), device.Download(da, n), 1e-7, 1e-6, $"addInto n={n}");

            kernels.Scale(output.View, db.View, 3f, n);
            TestTensors.AssertClose(ElementwiseReference.Scale(b, 3f), device.Download(output, n), 0, 1e-7, $"scale n={n}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Bad_sizes_throw_before_launch(string backend)
    {
        var device = devices.Get(backend);
        var kernels = device.Kernels<ElementwiseKernels>();
        using var small = device.Zeros<float>(4);
        using var big = device.Zeros<float>(8);
        var error = Assert.Throws<ArgumentException>(() => kernels.Add(small.View, big.View, big.View, 8));
        Assert.Contains("output has 4 elements", error.Message);
        Assert.Throws<ArgumentException>(() => kernels.Fill(big.View, 0, 0));
        Assert.Throws<ArgumentException>(() => kernels.Scale(big.View, big.View, 1, -3));
    }
}
