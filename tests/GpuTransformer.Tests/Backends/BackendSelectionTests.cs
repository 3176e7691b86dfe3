namespace GpuTransformer.Tests.Backends;

[Collection(DeviceCollection.Name)]
public sealed class BackendSelectionTests
{
    [Fact]
    public void Unknown_backend_is_a_clear_error_listing_the_known_ones()
    {
        var error = Assert.Throws<ArgumentException>(() => ComputeDevice.Create("vulkan"));
        Assert.Contains("Unknown backend 'vulkan'", error.Message);
        Assert.Contains("auto, cuda, opencl, cpu", error.Message);
    }

    [Fact]
    public void Listing_always_contains_the_cpu_simulator()
    {
        var devices = ComputeDevice.ListDevices();
        Assert.Contains(devices, d => d.Backend == Backend.Cpu && d.Kind == DeviceKind.Simulator);
        Assert.All(devices, d => Assert.False(string.IsNullOrWhiteSpace(d.Name)));
    }

    [Fact]
    public void Auto_prefers_a_real_device_over_the_simulator()
    {
        using var device = ComputeDevice.Create("auto");
        var found = ComputeDevice.ListDevices();
        if (found.Any(d => d.Backend != Backend.Cpu))
            Assert.NotEqual(Backend.Cpu, device.Backend);
        else
            Assert.Equal(Backend.Cpu, device.Backend);
    }

    [Fact]
    public void Missing_backend_error_lists_what_was_found()
    {
        var found = ComputeDevice.ListDevices();
        Assert.SkipWhen(found.Any(d => d.Backend == Backend.Cuda), "CUDA is present here: no backend is missing to ask for");
        var error = Assert.Throws<InvalidOperationException>(() => ComputeDevice.Create("cuda"));
        Assert.Contains("'cuda' is not available", error.Message);
        Assert.Contains("cpu:0", error.Message);
    }

    [Fact]
    public void OpenCL_without_generic_address_space_needs_the_opt_in()
    {
        var found = ComputeDevice.ListDevices();
        var needsOptIn = found.Where(d => d.Backend == Backend.OpenCL).ToList();
        Assert.SkipWhen(needsOptIn.Count == 0, "no OpenCL device here");
        Assert.SkipWhen(needsOptIn.Any(d => !d.NeedsPortableOptIn), "an OpenCL device with the generic address space is here: opencl picks it without the opt-in");
        var error = Assert.Throws<InvalidOperationException>(
            () => ComputeDevice.Create("opencl", new DeviceOptions { AllowPortableOpenCL = false }));
        Assert.Contains("--opencl-portable", error.Message);
        using var device = ComputeDevice.Create("opencl", new DeviceOptions { AllowPortableOpenCL = true });
        Assert.Equal(Backend.OpenCL, device.Backend);
    }

    [Fact]
    public void Required_backends_are_present()
    {
        var missing = Devices.Required.Except(Devices.Available).ToList();
        Assert.True(missing.Count == 0,
            $"{Devices.RequiredBackendsVariable} asks for [{string.Join(", ", Devices.Required)}] but [{string.Join(", ", missing)}] " +
            $"is missing: {string.Join("; ", missing.Select(Devices.WhyMissing))}. Found: {string.Join("; ", ComputeDevice.ListDevices())}");
    }

    [Fact]
    public void Every_backend_without_a_device_says_why()
    {
        var found = ComputeDevice.ListDevices();
        var missing = ComputeDevice.MissingBackends(found);
        foreach (var backend in new[] { Backend.Cuda, Backend.OpenCL })
        {
            var present = found.Any(d => d.Backend == backend);
            var explained = missing.SingleOrDefault(m => m.Backend == backend);
            Assert.True(present != (explained is not null), $"{backend}: present {present}, explanation {explained}");
            if (explained is not null)
            {
                Assert.False(string.IsNullOrWhiteSpace(explained.Reason));
                Assert.DoesNotContain('\n', explained.Reason);
                // The reason names the library it looked for or the driver call that failed.
                Assert.Matches(backend == Backend.Cuda ? "libcuda|nvcuda|cuda|NVIDIA" : "OpenCL|ICD", explained.Reason);
                var error = Assert.Throws<InvalidOperationException>(() => ComputeDevice.Create(backend));
                Assert.Contains(explained.Reason, error.Message);
            }
        }
        Assert.DoesNotContain(missing, m => m.Backend == Backend.Cpu);
    }
}
