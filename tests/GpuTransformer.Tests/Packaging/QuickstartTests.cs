using System.Text;
using System.Text.RegularExpressions;

namespace GpuTransformer.Tests.Packaging;

/// <summary>
/// The README's "Use it from C#" program, as printed, against freshly packed packages: packs
/// Kernels, Layers and Training into a folder feed (a version of its own, so no package cache
/// answers for it), writes the program into a console project outside the repository that
/// references GpuTransformer.Training from that feed (not the projects), and runs it on PoCL
/// (GPUTRANSFORMER_BACKEND=opencl). Slow: it builds the libraries and the program (about 2–3 minutes on 2 cores).
/// </summary>
public sealed partial class QuickstartTests
{
    private const string Marker = "<!-- quickstart: the test extracts the next csharp block -->";

    [Fact]
    [Trait("Category", "Slow")]
    public void README_quickstart_builds_against_the_packed_packages_and_runs()
    {
        var root = RepositoryRoot();
        if (root is null)
            Assert.Skip("Not run from a repository checkout (no README.md and Directory.Build.props above the tests).");
        if (CliRuns.Backend != "opencl")
            Assert.Skip("Needs PoCL (OpenCL on the CPU): the quickstart's 40 steps take many minutes on ILGPU's CPU accelerator.");
        var dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host) ? host : "dotnet";
        var code = Quickstart(File.ReadAllText(Path.Combine(root, "README.md")));

        var work = Directory.CreateTempSubdirectory("gpu-transformer-quickstart-");
        var version = $"0.0.0-quickstart.{DateTime.UtcNow.Ticks}";
        try
        {
            var feed = Directory.CreateDirectory(Path.Combine(work.FullName, "feed")).FullName;
            var build = Path.Combine(work.FullName, "build");
            foreach (var project in new[] { "Kernels", "Layers", "Training" })
            {
                Run(dotnet, root, "pack", Path.Combine(root, "src", project, $"GpuTransformer.{project}.csproj"), "-c", "Release", "-o", feed,
                    "--artifacts-path", build, $"-p:Version={version}", "-p:IncludeSymbols=false", "-nologo");
            }
            Assert.Contains($"GpuTransformer.Training.{version}.nupkg", Directory.GetFiles(feed).Select(Path.GetFileName));

            // The folder's own build files stop MSBuild from looking further up for a Directory.Build.props.
            var app = Directory.CreateDirectory(Path.Combine(work.FullName, "app")).FullName;
            File.WriteAllText(Path.Combine(work.FullName, "Directory.Build.props"), "<Project />\n");
            File.WriteAllText(Path.Combine(work.FullName, "Directory.Packages.props"), "<Project />\n");
            File.WriteAllText(Path.Combine(work.FullName, "nuget.config"), $"""
                <?xml version="1.0" encoding="utf-8"?>
                <configuration>
                  <packageSources>
                    <clear />
                    <add key="local" value="{feed}" />
                    <add key="nuget.org" value="https://api.nuget.org/v3/index.json" />
                  </packageSources>
                </configuration>
                """);
            File.WriteAllText(Path.Combine(app, "Quickstart.csproj"), $"""
                <Project Sdk="Microsoft.NET.Sdk">
                  <PropertyGroup>
                    <OutputType>Exe</OutputType>
                    <TargetFramework>net10.0</TargetFramework>
                    <ImplicitUsings>enable</ImplicitUsings>
                    <Nullable>enable</Nullable>
                    <TreatWarningsAsErrors>true</TreatWarningsAsErrors>
                  </PropertyGroup>
                  <ItemGroup>
                    <PackageReference Include="GpuTransformer.Training" Version="{version}" />
                  </ItemGroup>
                </Project>
                """);
            File.WriteAllText(Path.Combine(app, "Program.cs"), code);

            var output = Run(dotnet, app, "run", "-c", "Release", "--project", Path.Combine(app, "Quickstart.csproj"));

            Assert.Matches(new Regex(@"^device: .+$", RegexOptions.Multiline), output);
            var losses = LossLine().Matches(output).Select(m => double.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture)).ToList();
            Assert.Equal(4, losses.Count);
            Assert.All(losses, l => Assert.True(double.IsFinite(l) && l > 0, $"loss {l}"));
            // 40 AdamW steps on a text that repeats itself: well below the uniform ln 259 ≈ 5.56.
            Assert.True(losses[^1] < 1.5, $"last loss {losses[^1]} (all: {string.Join(", ", losses)})");
            Assert.Matches(new Regex(@"^generated: the cat.+$", RegexOptions.Multiline), output);
            Assert.Contains("reloaded: same continuation", output);
            Assert.True(File.Exists(Path.Combine(app, "tiny.safetensors")), "the saved weights");
        }
        finally
        {
            work.Delete(recursive: true);
            DeleteFromPackageCache(version);
        }
    }

    [Fact]
    public void README_holds_one_quickstart_block_under_its_marker()
    {
        var root = RepositoryRoot();
        if (root is null)
            Assert.Skip("Not run from a repository checkout.");
        var code = Quickstart(File.ReadAllText(Path.Combine(root, "README.md")));
        Assert.Contains("ComputeDevice.Create(", code);
        Assert.Contains("GPUTRANSFORMER_BACKEND", code);
        var lines = code.Split('\n').Length;
        Assert.InRange(lines, 20, 60);
    }

    /// <summary>The csharp block right after <see cref="Marker"/>.</summary>
    internal static string Quickstart(string readme)
    {
        var at = readme.IndexOf(Marker, StringComparison.Ordinal);
        Assert.True(at >= 0, $"README.md has no '{Marker}'");
        var match = CSharpBlock().Match(readme, at + Marker.Length);
        Assert.True(match.Success, "no ```csharp block after the quickstart marker");
        return match.Groups[1].Value;
    }

    private static string? RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "README.md")) && File.Exists(Path.Combine(dir.FullName, "Directory.Build.props")))
                return dir.FullName;
        }
        return null;
    }

    /// <summary>Runs dotnet on PoCL; its output (stdout and stderr), asserting exit 0.</summary>
    private static string Run(string dotnet, string directory, params string[] arguments)
    {
        var start = new ProcessStartInfo(dotnet) { WorkingDirectory = directory, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var argument in arguments)
            start.ArgumentList.Add(argument);
        // The test host's MSBuild variables point at its own build; the child finds its SDK itself.
        foreach (var key in start.Environment.Keys.Where(k => k.StartsWith("MSBuild", StringComparison.OrdinalIgnoreCase)).ToList())
            start.Environment.Remove(key);
        start.Environment["GPUTRANSFORMER_BACKEND"] = "opencl";
        start.Environment[DeviceOptions.PortableOpenCLVariable] = "1";
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        Process process;
        try
        {
            process = Process.Start(start)!;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            Assert.Skip($"No dotnet to run ({e.Message}).");
            throw;
        }
        using (process)
        {
            var output = new StringBuilder();
            process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
            process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            process.WaitForExit();
            var text = output.ToString();
            Assert.True(process.ExitCode == 0, $"dotnet {string.Join(' ', arguments)} exited {process.ExitCode}:\n{text}");
            return text;
        }
    }

    /// <summary>The test's own version, extracted into the NuGet cache by the restore: nothing else uses it.</summary>
    private static void DeleteFromPackageCache(string version)
    {
        var cache = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } set ? set
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        foreach (var id in new[] { "gputransformer.kernels", "gputransformer.layers", "gputransformer.training" })
        {
            var folder = Path.Combine(cache, id, version);
            if (Directory.Exists(folder))
                Directory.Delete(folder, recursive: true);
        }
    }

    [GeneratedRegex(@"```csharp\n(.*?)```", RegexOptions.Singleline)]
    private static partial Regex CSharpBlock();

    [GeneratedRegex(@"^step (\d+): loss ([0-9.]+)\s*$", RegexOptions.Multiline)]
    private static partial Regex LossLine();
}
