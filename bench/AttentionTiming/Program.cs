// Times Attention.Forward and Forward+Backward for B·H = 8 (B 1, H 8), d 64.
//   dotnet run -c Release --project bench/AttentionTiming -- [backend=opencl] [tile=default|Q32K32T1|…] [T=128,256,512] [reps=5]
using System.Diagnostics;
using GpuTransformer.Kernels;
using GpuTransformer.Kernels.Backends;
using ILGPU;
using ILGPU.Runtime;

var arguments = args.Select(a => a.Split('=', 2)).ToDictionary(a => a[0], a => a.Length > 1 ? a[1] : "");
var backend = arguments.GetValueOrDefault("backend", "opencl");
var lengths = arguments.GetValueOrDefault("T", "128,256,512").Split(',').Select(int.Parse).ToArray();
var reps = int.Parse(arguments.GetValueOrDefault("reps", "5"));
var tileName = arguments.GetValueOrDefault("tile", "default");
var options = new DeviceOptions { AllowPortableOpenCL = true };
using var probe = ComputeDevice.Create(backend, options);
var tuning = tileName == "default" ? probe.Tuning : probe.Tuning with { Attention = Enum.Parse<AttentionTile>(tileName) };
probe.Dispose();
using var device = ComputeDevice.Create(backend, options with { Tuning = tuning });
Console.WriteLine($"{device}  tile {tuning.Attention}");

if (arguments.TryGetValue("dump", out var dumpFolder))
{
    // Writes the generated OpenCL C / PTX of every entry point to the folder given (for reading the inner loops).
    var backendObject = typeof(ILGPU.Runtime.Accelerator).GetProperty("Backend", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(device.Accelerator)!;
    var compile = backendObject.GetType().GetMethod("Compile", [typeof(ILGPU.Backends.EntryPoints.EntryPointDescription).MakeByRefType(), typeof(KernelSpecialization).MakeByRefType()])!;
    Directory.CreateDirectory(dumpFolder);
    foreach (var entry in Attention.EntryPoints(tuning))
    {
        var description = entry.ExplicitlyGrouped
            ? ILGPU.Backends.EntryPoints.EntryPointDescription.FromExplicitlyGroupedKernel(entry.Method)
            : ILGPU.Backends.EntryPoints.EntryPointDescription.FromImplicitlyGroupedKernel(entry.Method);
        var compiled = compile.Invoke(backendObject, [description, KernelSpecialization.Empty]);
        var source = compiled!.GetType().GetProperty("Source")?.GetValue(compiled) ?? compiled.GetType().GetProperty("PTXAssembly")?.GetValue(compiled);
        File.WriteAllText(Path.Combine(dumpFolder, entry.ToString().Replace('<', '_').Replace('>', '_').Replace(", ", "_") + ".txt"), source?.ToString());
    }
    return;
}

if (arguments.TryGetValue("ptx", out var ptxFolder))
{
    // Offline PTX (sm_80, as ILGPU targets on an H100) of every entry point of the GPU tuning.
    using var context = Context.Create(builder => builder.Optimize(OptimizationLevel.O2).EnableAlgorithms());
    var ptx = new ILGPU.Backends.PTX.PTXBackend(context, ILGPU.Runtime.Cuda.CudaArchitecture.SM_80, ILGPU.Runtime.Cuda.CudaInstructionSet.ISA_80, null!);
    Directory.CreateDirectory(ptxFolder);
    foreach (var entry in Attention.EntryPoints(tuning with { Attention = AttentionTile.Q64K16T4 }))
    {
        var description = entry.ExplicitlyGrouped
            ? ILGPU.Backends.EntryPoints.EntryPointDescription.FromExplicitlyGroupedKernel(entry.Method)
            : ILGPU.Backends.EntryPoints.EntryPointDescription.FromImplicitlyGroupedKernel(entry.Method);
        var compiled = (ILGPU.Backends.PTX.PTXCompiledKernel)ptx.Compile(description, KernelSpecialization.Empty);
        File.WriteAllText(Path.Combine(ptxFolder, entry.ToString().Replace('<', '_').Replace('>', '_').Replace(", ", "_") + ".ptx"), compiled.PTXAssembly);
    }
    return;
}

var watch = Stopwatch.StartNew();
var kernels = device.Kernels<Attention>();
Console.WriteLine($"load (compile) {watch.Elapsed.TotalSeconds:F1} s");

const int batch = 1, heads = 8, dim = 64;
foreach (var causal in new[] { false, true })
{
    foreach (var t in lengths)
    {
        var shape = new AttentionShape(batch, heads, t, t, dim);
        var n = batch * t * heads * dim;
        var rows = batch * heads * t;
        var random = new Random(t);
        var accelerator = device.Accelerator;
        using var q = Upload(Enumerable.Range(0, n).Select(_ => (float)random.NextDouble() - 0.5f).ToArray());
        using var k = Upload(Enumerable.Range(0, n).Select(_ => (float)random.NextDouble() - 0.5f).ToArray());
        using var v = Upload(Enumerable.Range(0, n).Select(_ => (float)random.NextDouble() - 0.5f).ToArray());
        using var dOut = Upload(Enumerable.Range(0, n).Select(_ => (float)random.NextDouble() - 0.5f).ToArray());
        using var o = accelerator.Allocate1D<float>(n);
        using var dq = accelerator.Allocate1D<float>(n);
        using var dk = accelerator.Allocate1D<float>(n);
        using var dv = accelerator.Allocate1D<float>(n);
        using var lse = accelerator.Allocate1D<float>(rows);
        using var rowDot = accelerator.Allocate1D<float>(rows);
        var attention = new AttentionOptions { Causal = causal };

        MemoryBuffer1D<float, Stride1D.Dense> Upload(float[] values)
        {
            var buffer = accelerator.Allocate1D<float>(values.Length);
            buffer.View.CopyFromCPU(values);
            return buffer;
        }

        void Forward() => kernels.Forward(o.View, lse.View, q.View, k.View, v.View, shape, attention);
        void Backward() => kernels.Backward(dq.View, dk.View, dv.View, rowDot.View, dOut.View, o.View, lse.View, q.View, k.View, v.View, shape, attention);

        // Median wall time and median process CPU time per call (CPU time is steadier on a shared machine; ideal wall = CPU / cores).
        (double Wall, double Cpu) Median(Action run)
        {
            run();
            device.Synchronize(); // first launch compiles the work-group function on PoCL
            var walls = new List<double>();
            var cpus = new List<double>();
            var process = System.Diagnostics.Process.GetCurrentProcess();
            for (var r = 0; r < reps; r++)
            {
                process.Refresh();
                var cpu = process.TotalProcessorTime;
                var w = Stopwatch.StartNew();
                run();
                device.Synchronize();
                walls.Add(w.Elapsed.TotalMilliseconds);
                process.Refresh();
                cpus.Add((process.TotalProcessorTime - cpu).TotalMilliseconds);
            }
            walls.Sort();
            cpus.Sort();
            return (walls[walls.Count / 2], cpus[cpus.Count / 2]);
        }

        var forward = Median(Forward);
        var backward = Median(Backward);
        var both = Median(() => { Forward(); Backward(); });
        // Useful FLOPs: forward 4·B·H·T²·d (Q·Kᵀ and P·V), backward 10·B·H·T²·d (P, dP, dV, dK, dQ); halved when causal.
        var work = (double)batch * heads * t * t * dim * (causal ? 0.5 : 1.0);
        Console.WriteLine(
            $"causal {causal,-5} T {t,4}: forward {forward.Wall,8:F2} ms (cpu {forward.Cpu,8:F1} ms, {4 * work / forward.Wall / 1e6,5:F1} GFLOP/s)  " +
            $"backward {backward.Wall,8:F2} ms (cpu {backward.Cpu,8:F1})  forward+backward {both.Wall,8:F2} ms (cpu {both.Cpu,8:F1} ms, {14 * work / both.Wall / 1e6,5:F1} GFLOP/s)");
    }
}
