using BenchmarkDotNet.Running;
using GpuTransformer.Bench;
using GpuTransformer.Bench.Compare;
using GpuTransformer.Bench.Ptx;

// gpu-transformer-bench compare [options]     plain runner: tiled vs naive matmul, fused vs unfused attention, row-wise GB/s
// gpu-transformer-bench ptx --tuning cuda [...] every kernel instantiation of a tuning as PTX, with its load widths and local memory
// gpu-transformer-bench [--full] [--backends opencl,cuda] [BenchmarkDotNet arguments, e.g. --filter '*Matmul*']
if (args.Length > 0 && args[0] == "compare")
    return CompareCommand.Run(args[1..]);
if (args.Length > 0 && args[0] == "ptx")
    return PtxCommand.Run(args[1..]);

var rest = new List<string>();
for (var i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--full":
            BenchSettings.Full = true;
            break;
        case "--backends" when i + 1 < args.Length:
            BenchDevices.Requested = args[++i].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(BenchDevices.Normalize).ToList();
            break;
        default:
            rest.Add(args[i]);
            break;
    }
}
if (!rest.Any(a => a.StartsWith("--filter", StringComparison.Ordinal) || a == "-f" || a.StartsWith("--list", StringComparison.Ordinal)))
    rest.AddRange(["--filter", "*"]);
Console.WriteLine("Backends: " + string.Join(", ", BenchDevices.Labels.Select(l => $"{l} = {BenchDevices.Get(l)}")));
try
{
    BenchmarkSwitcher.FromAssembly(typeof(BenchConfig).Assembly).Run([.. rest], BenchConfig.Create(BenchSettings.Full));
}
finally
{
    BenchDevices.DisposeAll();
}
return 0;
