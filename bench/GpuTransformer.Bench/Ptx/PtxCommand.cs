using System.Globalization;
using GpuTransformer.Bench.Compare;
using GpuTransformer.Kernels.Compilation;

namespace GpuTransformer.Bench.Ptx;

/// <summary>
/// <c>ptx</c>: compiles every kernel instantiation one backend's tuning loads to PTX (no GPU)
/// and prints <see cref="PtxReport"/>'s table; optionally writes the markdown, the JSON and
/// one <c>.ptx</c> per kernel (what the GPU recipe feeds to <c>ptxas -v</c>).
/// </summary>
public static class PtxCommand
{
    /// <summary>The usage text.</summary>
    public const string Usage = """
        gpu-transformer-bench ptx --tuning cuda [--arch sm_90] [--out-dir DIR] [--markdown FILE] [--json FILE]
          --tuning NAME     whose kernel instantiations to compile: cuda, opencl-gpu, pocl or cpu (required)
          --arch sm_XY      CUDA architecture the PTX backend assumes (default sm_90)
          --out-dir DIR     write one <Family>.<Kernel>[.<instantiation>].ptx per kernel there
          --markdown FILE   write the report as markdown (with date, commit and this command)
          --json FILE       write the same numbers as JSON
        """;

    /// <summary>Runs the report; returns the process exit code (1 when a kernel did not compile, 2 on bad arguments).</summary>
    public static int Run(string[] args)
    {
        ArgumentNullException.ThrowIfNull(args);
        if (args.Contains("--help") || args.Contains("-h"))
        {
            Console.WriteLine(Usage);
            return 0;
        }
        string? tuning = null, outDir = null, markdown = null, json = null;
        var architecture = "sm_90";
        OfflineTarget target;
        try
        {
            for (var i = 0; i < args.Length; i++)
            {
                string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value.");
                switch (args[i])
                {
                    case "--tuning": tuning = Value(); break;
                    case "--arch": architecture = Value(); break;
                    case "--out-dir": outDir = Value(); break;
                    case "--markdown": markdown = Value(); break;
                    case "--json": json = Value(); break;
                    default: throw new ArgumentException($"Unknown option '{args[i]}'.");
                }
            }
            if (tuning is null)
                throw new ArgumentException($"--tuning is required: one of {string.Join(", ", PtxReport.TuningNames)}.");
            PtxReport.DeviceFor(tuning);
            target = PtxReport.TargetFor(architecture);
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            Console.Error.WriteLine(Usage);
            return 2;
        }

        var report = PtxReport.Create(tuning, target);
        var machine = MachineInfo.Current();
        string[] preamble =
        [
            $"# PTX report: `{tuning}` tuning, {architecture}",
            "",
            $"- Date: {machine.DateUtc.ToString("yyyy-MM-dd HH:mm", CultureInfo.InvariantCulture)} UTC; commit {machine.Commit}; {machine.Runtime}",
            $"- Command: `dotnet bench/GpuTransformer.Bench/bin/Release/net10.0/gpu-transformer-bench.dll ptx {string.Join(' ', args)}`",
            "",
        ];
        var text = report.ToMarkdown(preamble);
        Console.WriteLine(text);
        if (markdown is not null)
            Write(markdown, text);
        if (json is not null)
            Write(json, report.ToJson());
        if (outDir is not null)
            Console.WriteLine($"{report.WritePtx(outDir).Count} .ptx files in {outDir}");

        var failed = report.Kernels.Where(k => k.Statistics is null).ToList();
        foreach (var kernel in failed)
            Console.Error.WriteLine($"error: {kernel.Name} did not compile: {kernel.Error}");
        return failed.Count == 0 ? 0 : 1;
    }

    private static void Write(string path, string text)
    {
        var directory = Path.GetDirectoryName(Path.GetFullPath(path));
        if (directory is not null)
            Directory.CreateDirectory(directory);
        File.WriteAllText(path, text);
    }
}
