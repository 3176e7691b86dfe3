using GpuTransformer.Cli;

namespace GpuTransformer.Tests.Cli;

[Collection(DeviceCollection.Name)]
public sealed class CliTests
{
    private static (int Code, string Out, string Error) Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = CliApp.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    private static void AssertOneLineError(string error, string expectedStart)
    {
        var lines = error.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.StartsWith(expectedStart, lines[0]);
        Assert.DoesNotContain("   at ", error);
    }

    [Fact]
    public void Devices_lists_every_device_and_the_one_auto_picks()
    {
        var (code, output, error) = Run("devices");
        Assert.Equal(0, code);
        Assert.Equal("", error);
        var found = ComputeDevice.ListDevices();
        foreach (var device in found)
            Assert.Contains($"{device.BackendName}:{device.IndexInBackend}", output);
        var auto = ComputeDevice.Choose(found, null);
        Assert.Contains($"--backend auto picks {auto.BackendName}:{auto.IndexInBackend} {auto.Name}", output);
        Assert.Contains("CPUAccelerator", output);
        foreach (var missing in ComputeDevice.MissingBackends(found))
            Assert.Contains($"{ComputeDevice.BackendName(missing.Backend)}: no device; ", output);
    }

    [Fact]
    public void Unknown_backend_is_a_one_line_usage_error()
    {
        var (code, output, error) = Run("--backend", "vulkan", "devices");
        Assert.Equal(CliApp.UsageError, code);
        Assert.Equal("", output);
        AssertOneLineError(error, "error: Unknown backend 'vulkan'. Known backends: auto, cuda, opencl, cpu.");
    }

    [Fact]
    public void Cuda_backend_is_picked_where_present_and_otherwise_fails_with_one_line()
    {
        var (code, output, error) = Run("devices", "--backend", "cuda");
        if (ComputeDevice.ListDevices().Any(d => d.Backend == Backend.Cuda))
        {
            Assert.Equal(0, code);
            Assert.Contains("--backend cuda picks cuda:0", output);
        }
        else
        {
            Assert.Equal(CliApp.Failure, code);
            AssertOneLineError(error, "error: Backend 'cuda' is not available on this machine");
            Assert.Single(error.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        }
    }

    [Fact]
    public void Corpus_describes_splits_tokenizers_and_the_unigram_baseline()
    {
        var (code, output, error) = Run("corpus", "--corpus", Fixtures.SotuMini, "--tokenizers", "byte", "word");
        Assert.Equal("", error);
        Assert.Equal(0, code);
        Assert.Contains("Corpus 'sotu-mini'", output);
        Assert.Contains("by document", output);
        Assert.Matches(@"train\s*│\s*8\s*│", output);
        Assert.Matches(@"byte\s*│\s*259\s*│", output);
        Assert.Contains("word", output);
        Assert.DoesNotContain("bpe-cl100k  ", output);
    }

    [Fact]
    public void Bad_corpus_path_is_one_line_and_verbose_adds_the_stack_trace()
    {
        var missing = Path.Combine(Path.GetTempPath(), "gt-no-such-corpus", "x.txt");
        var (code, _, error) = Run("corpus", "--corpus", missing);
        Assert.Equal(CliApp.Failure, code);
        AssertOneLineError(error, $"error: {missing}: does not exist.");
        Assert.Single(error.Split('\n', StringSplitOptions.RemoveEmptyEntries));

        var (verboseCode, _, verboseError) = Run("corpus", "--corpus", missing, "--verbose");
        Assert.Equal(CliApp.Failure, verboseCode);
        Assert.Contains("CorpusException", verboseError);
        Assert.Contains("   at ", verboseError);
    }

    [Fact]
    public void Unknown_tokenizer_is_a_clear_error()
    {
        var (code, _, error) = Run("corpus", "--corpus", Fixtures.SotuMini, "--tokenizers", "sentencepiece");
        Assert.Equal(CliApp.UsageError, code);
        AssertOneLineError(error, "error: Unknown tokenizer 'sentencepiece'. Known tokenizers: byte, word, bpe-cl100k.");
    }
}
