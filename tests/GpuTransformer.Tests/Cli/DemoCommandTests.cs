using GpuTransformer.Cli;
using GpuTransformer.Kernels.Workloads;

namespace GpuTransformer.Tests.Cli;

[Collection(DeviceCollection.Name)]
public sealed class DemoCommandTests
{
    private static (int Code, string Out, string Error) Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = CliApp.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    [Fact]
    public void Demo_checks_every_family_on_the_simulator_and_labels_it()
    {
        var (code, output, error) = Run("demo", "--backend", "cpu");
        Assert.True(code == 0, output + error);
        Assert.Equal("", error);
        var suite = WorkloadSuites.Demo(simulator: true);
        foreach (var family in suite.Select(s => s.Family).Distinct())
            Assert.Contains(family, output);
        Assert.Contains($"{suite.Count} of {suite.Count} checks passed", output);
        Assert.Contains("simulator", output);
        Assert.DoesNotContain("FAIL", output);
    }

    [Fact]
    public void Demo_only_runs_the_named_families_and_rejects_unknown_ones()
    {
        var (code, output, _) = Run("demo", "--backend", "cpu", "--only", "softmax", "AdamW");
        Assert.Equal(0, code);
        Assert.Contains("Softmax", output);
        Assert.Contains("AdamW", output);
        Assert.DoesNotContain("Matmul", output);
        Assert.Contains("3 of 3 checks passed", output);

        var (badCode, _, badError) = Run("demo", "--backend", "cpu", "--only", "convolution");
        Assert.Equal(CliApp.Failure, badCode);
        Assert.StartsWith("error: --only matches no family", badError);
    }
}
