using System.Globalization;
using System.Text;
using System.Text.Json;
using GpuTransformer.Kernels;
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Kernels.Profiling;
using GpuTransformer.Kernels.Workloads;
using GpuTransformer.Training;
using GpuTransformer.Reporting;
using GpuTransformer.Training.Reporting;

namespace GpuTransformer.Bench.Compare;

/// <summary>One timed workload, as the report and the JSON file give it.</summary>
/// <param name="Op">Operation key shared with the PyTorch reference script: sgemm, attention, softmax_fwd, softmax_bwd, layernorm_fwd, layernorm_bwd, train_step, generate.</param>
/// <param name="Shape">The sizes that identify the problem (same keys as the PyTorch script).</param>
/// <param name="Impl">Which implementation: tiled, naive, fused, unfused, ours.</param>
/// <param name="Description">The workload in words.</param>
/// <param name="Flops">FLOPs per run (convention of <see cref="WorkloadSpec.Cost"/>).</param>
/// <param name="Bytes">Fewest bytes moved per run.</param>
/// <param name="Unit">GFLOP/s, GB/s or tokens/s.</param>
/// <param name="MedianMs">Median time of a run.</param>
/// <param name="MinMs">Fastest run.</param>
/// <param name="Reps">Timed runs.</param>
/// <param name="Rate">Speed at the median time, in <paramref name="Unit"/>.</param>
/// <param name="BestRate">Speed at the fastest run.</param>
/// <param name="Check">"ok", "FAIL" or null when not checked.</param>
/// <param name="MaxError">max |Δ| from the reference when checked.</param>
/// <param name="Error">Why it did not run (e.g. out of device memory), else null.</param>
/// <param name="Clock">Where the times were read: "host" or "device events" (<see cref="TimingClock"/>).</param>
/// <param name="LaunchesPerSample">Runs enqueued back to back per timed sample (<see cref="TimingPlan.MinSampleSeconds"/>).</param>
public sealed record Measurement(
    string Op,
    IReadOnlyDictionary<string, object> Shape,
    string Impl,
    string Description,
    double Flops,
    double Bytes,
    string Unit,
    double MedianMs,
    double MinMs,
    int Reps,
    double Rate,
    double BestRate,
    string? Check,
    double? MaxError,
    string? Error,
    string Clock = "host",
    int LaunchesPerSample = 1)
{
    /// <summary>The spelling of <paramref name="clock"/> in reports and JSON.</summary>
    public static string ClockName(TimingClock clock) => clock == TimingClock.DeviceEvents ? "device events" : "host";
}

/// <summary>
/// <c>compare</c>: in one run on one backend, tiled vs naive matmul, fused vs unfused
/// attention (forward and forward+backward), row-wise GB/s, training and generation
/// tokens/s; prints markdown tables and optionally writes the report (<c>--out</c>), the
/// measurements (<c>--json</c>, at the end) and appends each measurement as it is taken
/// (<c>--jsonl</c>, so that a killed run keeps what it measured).
/// </summary>
public static class CompareCommand
{
    /// <summary>The tuning choices a reader needs to interpret the numbers (report header and JSON).</summary>
    private static string TuningSummary(KernelTuning tuning) =>
        $"matmul {tuning.Matmul} (column run {Math.Max(1, tuning.MatmulColumnRun)}), attention {tuning.Attention}, rows {tuning.RowTile} (group {tuning.RowGroupSize}), " +
        $"unfused attention in training up to T {tuning.UnfusedAttentionMaxLength}";

    private static readonly CultureInfo C = CultureInfo.InvariantCulture;

    /// <summary>Runs the comparison; returns the process exit code.</summary>
    public static int Run(string[] args)
    {
        ArgumentNullException.ThrowIfNull(args);
        if (args.Contains("--help") || args.Contains("-h"))
        {
            Console.WriteLine(CompareOptions.Usage);
            return 0;
        }
        CompareOptions options;
        try
        {
            if (args is ["--print-generate-spec", var preset])
            {
                Console.WriteLine(GenerationCase.FromPreset(LanguageModelPresets.Get(preset)).Spec);
                return 0;
            }
            options = CompareOptions.Parse(args);
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            Console.Error.WriteLine(CompareOptions.Usage);
            return 2;
        }

        var machine = MachineInfo.Current();
        using var device = ComputeDevice.Create(options.Backend, new DeviceOptions { AllowPortableOpenCL = true, Profiling = options.DeviceEvents });
        Log($"device {device}; load average {machine.LoadAverage}");
        using var appended = options.Jsonl is { } jsonl ? new MeasurementLog(jsonl, RunHeader(device, options, machine)) : null;
        var results = new List<Measurement>();
        foreach (var section in options.Sections)
        {
            var measurements = section switch
            {
                "matmul" => RunMatmul(device, options),
                "attention" => RunAttention(device, options),
                "rowwise" => RunRowwise(device, options),
                "train" => RunTraining(device, options),
                "generate" => RunGeneration(device, options),
                _ => throw new InvalidOperationException($"Unknown section '{section}'."),
            };
            foreach (var measurement in measurements)
            {
                results.Add(measurement);
                appended?.Append(measurement);
            }
        }

        var report = Report(device, options, machine, results);
        Console.WriteLine(report);
        if (options.Out is { } path)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
            File.WriteAllText(path, report);
            Log($"wrote {path}");
        }
        if (options.Json is { } json)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(json))!);
            var document = RunHeader(device, options, machine);
            document["load_average_end"] = MachineInfo.LoadAverageNow();
            document["results"] = results;
            File.WriteAllText(json, JsonSerializer.Serialize(document, JsonOptions));
            Log($"wrote {json}");
        }
        var failed = results.Count(r => r.Check == "FAIL" || (r.Error is not null && !r.Error.StartsWith("skipped", StringComparison.Ordinal)));
        return failed == 0 ? 0 : 1;
    }

    /// <summary>What the JSON document (and the first line of the JSON-lines file) says about the run.</summary>
    private static Dictionary<string, object> RunHeader(ComputeDevice device, CompareOptions options, MachineInfo machine) => new()
    {
        ["backend"] = device.Description.BackendName,
        ["device"] = device.Description.Name,
        ["device_kind"] = device.Description.Kind.ToString(),
        ["tuning"] = TuningSummary(device.Tuning),
        ["machine"] = machine,
        ["arguments"] = options.Arguments,
    };

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>
    /// The <c>--jsonl</c> file: one JSON object per line, appended and flushed as each measurement
    /// is taken — first {"run": header}, then {"measurement": …} — so that a run killed at any moment
    /// leaves every finished measurement (bench/gpu/report.py reads it, skipping a torn last line).
    /// </summary>
    private sealed class MeasurementLog : IDisposable
    {
        private static readonly JsonSerializerOptions LineOptions = new(JsonOptions) { WriteIndented = false };
        private readonly StreamWriter writer;

        public MeasurementLog(string path, Dictionary<string, object> header)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
            writer = new StreamWriter(new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.Read), new UTF8Encoding(false));
            Write(new Dictionary<string, object> { ["run"] = header });
        }

        public void Append(Measurement measurement) => Write(new Dictionary<string, object> { ["measurement"] = measurement });

        private void Write(object line)
        {
            writer.Write(JsonSerializer.Serialize(line, LineOptions) + "\n");
            writer.Flush();
        }

        public void Dispose() => writer.Dispose();
    }

    private static IEnumerable<Measurement> RunMatmul(ComputeDevice device, CompareOptions options)
    {
        foreach (var layout in options.Layouts)
        {
            foreach (var n in options.MatmulSizes)
            {
                var shape = new Dictionary<string, object> { ["n"] = n, ["layout"] = layout.ToString() };
                yield return Measure(device, options, MatmulSpec.Square(n, layout), "sgemm", shape, "tiled");
                if (n <= options.NaiveMax)
                    yield return Measure(device, options, MatmulSpec.Square(n, layout, naive: true), "sgemm", shape, "naive");
            }
            foreach (var (m, n, k) in options.MatmulShapes)
            {
                var shape = new Dictionary<string, object> { ["m"] = m, ["n"] = n, ["k"] = k, ["layout"] = layout.ToString() };
                yield return Measure(device, options, new MatmulSpec(layout, m, n, k), "sgemm", shape, "tiled");
                if (Math.Max(m, Math.Max(n, k)) <= options.NaiveMax)
                    yield return Measure(device, options, new MatmulSpec(layout, m, n, k, Naive: true), "sgemm", shape, "naive");
            }
        }
    }

    private static IEnumerable<Measurement> RunAttention(ComputeDevice device, CompareOptions options)
    {
        foreach (var backward in options.Backward)
        {
            foreach (var causal in options.Causal)
            {
                foreach (var d in options.HeadDims)
                {
                    foreach (var t in options.Lengths)
                    {
                        var shape = new Dictionary<string, object>
                        {
                            ["b"] = options.Batch,
                            ["h"] = options.Heads,
                            ["t"] = t,
                            ["d"] = d,
                            ["causal"] = causal,
                            ["pass"] = backward ? "fwdbwd" : "fwd",
                        };
                        yield return Measure(device, options, new AttentionSpec(options.Batch, options.Heads, t, d, causal, backward), "attention", shape, "fused");
                        if (options.Unfused && t <= options.UnfusedMax)
                            yield return Measure(device, options, new AttentionSpec(options.Batch, options.Heads, t, d, causal, backward, Unfused: true), "attention", shape, "unfused");
                    }
                }
            }
        }
    }

    private static IEnumerable<Measurement> RunRowwise(ComputeDevice device, CompareOptions options)
    {
        foreach (var (rows, columns) in options.RowShapes)
        {
            var shape = new Dictionary<string, object> { ["rows"] = rows, ["cols"] = columns };
            yield return Measure(device, options, new SoftmaxSpec(rows, columns), "softmax_fwd", shape, "ours");
            yield return Measure(device, options, new SoftmaxSpec(rows, columns, Backward: true), "softmax_bwd", shape, "ours");
            yield return Measure(device, options, new LayerNormSpec(rows, columns), "layernorm_fwd", shape, "ours");
            yield return Measure(device, options, new LayerNormSpec(rows, columns, Backward: true), "layernorm_bwd", shape, "ours");
        }
    }

    private static IEnumerable<Measurement> RunTraining(ComputeDevice device, CompareOptions options)
    {
        var cases = options.TrainPresets.Select(p => TrainingCase.FromPreset(LanguageModelPresets.Get(p))).ToList();
        if (options.TrainConfig is { } custom)
            cases.Add(TrainingCase.Parse(custom));
        foreach (var trainingCase in cases)
        {
            var impl = trainingCase.Name == "custom" ? "ours" : trainingCase.Name; // "ours" pairs with PyTorch's train_step in bench/gpu/report.py
            // The first steps compile kernels and warm the JIT: at least three untimed steps.
            yield return TokensPerSecond(options, "train_step", trainingCase.Shape, impl, trainingCase.ToString(), trainingCase.TokensPerStep, "step",
                () => TrainingThroughput.Measure(device, trainingCase, options.Timing with { Warmup = Math.Max(3, options.Timing.Warmup) }));
            if (options.Profile is { } folder)
                SaveProfile(TrainingThroughput.Profile(device, trainingCase, options.ProfileSteps), folder, $"train-{trainingCase.Name}");
        }
    }

    private static IEnumerable<Measurement> RunGeneration(ComputeDevice device, CompareOptions options)
    {
        foreach (var preset in options.GeneratePresets)
        {
            var generationCase = GenerationCase.FromPreset(LanguageModelPresets.Get(preset));
            // "ours" pairs with PyTorch's generate row (bench/gpu/torch_reference.py --generate with the same shape).
            yield return TokensPerSecond(options, "generate", generationCase.Shape, "ours", generationCase.ToString(), generationCase.NewTokens, "generation",
                () => GenerationThroughput.Measure(device, generationCase, options.Timing with { Warmup = Math.Max(1, options.Timing.Warmup) }));
            if (options.Profile is { } folder)
                SaveProfile(GenerationThroughput.Profile(device, generationCase), folder, $"generate-{preset}");
        }
    }

    /// <summary>Writes a profile's Markdown, JSON and bar chart as <paramref name="name"/>.* into <paramref name="folder"/>.</summary>
    private static void SaveProfile(ProfileReport report, string folder, string name)
    {
        var (markdown, _) = report.Save(folder, name);
        ProfileChart.Save(Path.Combine(folder, name + ".png"), report);
        Log($"profile: {markdown} (.json, .png)");
    }

    /// <summary>A tokens/s measurement: <paramref name="tokens"/> per timed <paramref name="run"/>, or the error that stopped it.</summary>
    private static Measurement TokensPerSecond(CompareOptions options, string op, IReadOnlyDictionary<string, object> shape, string impl, string description, long tokens, string run, Func<WorkloadTiming> measure)
    {
        Measurement Failed(string error) =>
            new(op, shape, impl, description, 0, 0, "tokens/s", double.NaN, double.NaN, 0, double.NaN, double.NaN, null, null, error);
        if (Clock.Elapsed.TotalSeconds > options.TimeLimit)
        {
            Log($"{description}: skipped (time limit {options.TimeLimit} s)");
            return Failed("skipped: time limit");
        }
        try
        {
            var timing = measure();
            var result = new Measurement(op, shape, impl, description, 0, 0, "tokens/s",
                timing.MedianSeconds * 1e3, timing.MinSeconds * 1e3, timing.Repetitions, tokens / timing.MedianSeconds, tokens / timing.MinSeconds, null, null, null,
                Measurement.ClockName(timing.Clock), timing.LaunchesPerSample);
            Log($"{description}: median {Ms(result.MedianMs)} ms per {run}, {result.Rate.ToString("N0", C)} tokens/s ({result.Reps} runs)");
            return result;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            Log($"{description}: ERROR {e.GetType().Name}: {e.Message.Split('\n')[0]}");
            return Failed(e.Message.Split('\n')[0]);
        }
    }

    private static readonly System.Diagnostics.Stopwatch Clock = System.Diagnostics.Stopwatch.StartNew();

    private static Measurement Measure(ComputeDevice device, CompareOptions options, WorkloadSpec spec, string op, Dictionary<string, object> shape, string impl)
    {
        var cost = spec.Cost;
        if (Clock.Elapsed.TotalSeconds > options.TimeLimit)
        {
            Log($"{spec}: skipped (time limit {options.TimeLimit} s)");
            return new Measurement(op, shape, impl, spec.ToString(), cost.Flops, cost.Bytes, cost.UnitName, double.NaN, double.NaN, 0, double.NaN, double.NaN, null, null, "skipped: time limit");
        }
        try
        {
            using var workload = spec.Create(device);
            var check = options.Check ? workload.Check() : (WorkloadCheck?)null;
            var timing = WorkloadTimer.Measure(workload, options.Timing);
            var result = new Measurement(
                op, shape, impl, spec.ToString(), cost.Flops, cost.Bytes, cost.UnitName,
                timing.MedianSeconds * 1e3, timing.MinSeconds * 1e3, timing.Repetitions,
                cost.Rate(timing.MedianSeconds), cost.Rate(timing.MinSeconds),
                check is null ? null : check.Value.Passed ? "ok" : "FAIL", check?.MaxAbsError, null,
                Measurement.ClockName(timing.Clock), timing.LaunchesPerSample);
            Log($"{spec}: median {Ms(result.MedianMs)} ms, min {Ms(result.MinMs)} ms ({result.Reps} samples × {timing.LaunchesPerSample} launches, {result.Clock} clock), {Rate(result.Rate)} {cost.UnitName}" +
                (check is { } c ? $"; check {(c.Passed ? "ok" : "FAIL")} max |Δ| {c.MaxAbsError:G3}" : ""));
            return result;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            Log($"{spec}: ERROR {e.GetType().Name}: {e.Message.Split('\n')[0]}");
            return new Measurement(op, shape, impl, spec.ToString(), cost.Flops, cost.Bytes, cost.UnitName, double.NaN, double.NaN, 0, double.NaN, double.NaN, null, null, e.Message.Split('\n')[0]);
        }
        finally
        {
            device.Synchronize();
        }
    }

    private static void Log(string line)
    {
        Console.Error.WriteLine($"[compare {DateTime.Now:HH:mm:ss}] {line}");
        Console.Error.Flush();
    }

    // ------------------------------------------------------------------ report

    private static string Report(ComputeDevice device, CompareOptions options, MachineInfo machine, List<Measurement> results)
    {
        var text = new StringBuilder();
        void Line(string line = "") => text.Append(line).Append('\n');
        var simulator = device.Description.Kind == DeviceKind.Simulator;
        Line($"# {options.Title ?? $"GpuTransformer kernels on {device.Description.BackendName}: tiled vs naive matmul, fused vs unfused attention, row-wise bandwidth"}");
        Line();
        var endLoad = MachineInfo.LoadAverageNow();
        // The load at the start is other work; by the end it includes this run's own threads (about one per core).
        var before = OneMinute(machine.LoadAverage);
        if (before > machine.Cores / 2.0)
        {
            Line($"**PROVISIONAL**: the machine was busy (1-minute load average {before.ToString("F1", C)} on {machine.Cores} cores at the start); re-measure on a quiet machine.");
            Line();
        }
        Line($"- Backend: {device.Description.BackendName}; device: {device.Description.Name} ({device.Description.Kind}{(simulator ? ", ILGPU's CPU simulator: correctness only, speeds mean nothing" : "")}); tuning: {TuningSummary(device.Tuning)}");
        foreach (var line in machine.MarkdownLines())
            Line(line);
        Line($"- Load average at the end: {endLoad} (this run's own threads included)");
        var arguments = string.Join(' ', options.Arguments.Select(Quote));
        Line($"- Command: `dotnet run -c Release --project bench/GpuTransformer.Bench -- compare {arguments}` (published: `gpu-transformer-bench compare {arguments}`)");
        var timing = options.Timing;
        var batched = timing.MinSampleSeconds > 0
            ? $"each timed sample enqueues the kernel launches of as many runs back to back as fill {timing.MinSampleSeconds * 1e3:G3} ms (at most {WorkloadTimer.MaxLaunchesPerSample}), then synchronizes, and counts as that many runs"
            : "each run is the launch(es) followed by a device synchronization";
        var clock = options.DeviceEvents
            ? "read from device events (ILGPU profiling markers) where the backend records them, else a monotonic host clock: the `clock` of each measurement in the JSON says which"
            : "timed by a monotonic host clock";
        Line($"- Timing: {timing.Warmup} warm-up runs, then at least {timing.MinRepetitions} timed samples (up to {timing.MaxRepetitions}, until {timing.MinSeconds:G3} s); {batched}; {clock}. Median and fastest run. Training steps and generations: one per sample, host clock.");
        Line();

        var matmul = results.Where(r => r.Op == "sgemm").ToList();
        if (matmul.Count > 0)
        {
            Line("## Matmul: tiled vs naive (FP32)");
            Line();
            Line("GFLOP/s = 2·M·N·K / median time; a size n is the square product M = N = K = n.");
            Line();
            Line("| layout | n or M×N×K | tiled ms (median / min) | tiled GFLOP/s | naive ms (median / min) | naive GFLOP/s | tiled ÷ naive |");
            Line("|---|---:|---:|---:|---:|---:|---:|");
            foreach (var group in matmul.GroupBy(r => (Layout: (string)r.Shape["layout"], Size: MatmulSize(r.Shape))))
            {
                var tiled = group.FirstOrDefault(r => r.Impl == "tiled");
                var naive = group.FirstOrDefault(r => r.Impl == "naive");
                Line($"| {group.Key.Layout} | {group.Key.Size} | {Times(tiled)} | {RateOf(tiled)} | {Times(naive)} | {RateOf(naive)} | {Ratio(naive, tiled)} |");
            }
            Line();
        }

        var attention = results.Where(r => r.Op == "attention").ToList();
        if (attention.Count > 0)
        {
            Line($"## Attention: fused vs unfused (B {options.Batch}, H {options.Heads}: B·H = {options.Batch * options.Heads})");
            Line();
            Line("Fused: `Attention.Forward`/`Backward` (FlashAttention-2 style, no T×T matrix in memory). " +
                "Unfused, from our own kernels: S = (1/√d)·Q·Kᵀ as one batched strided `Matmul` (NT) into [B, H, T, T], `Softmax` in place with the causal mask, O = P·V (`Matmul` NN); " +
                "its backward is implemented too: dP = dO·Vᵀ (NT), dV = Pᵀ·dO (TN), softmax backward in place, dQ = (1/√d)·dS·K (NN), dK = (1/√d)·dSᵀ·Q (TN). " +
                "GFLOP/s count the products only, FlashAttention's convention: forward 4·B·H·T²·d (halved when causal), forward+backward 3.5× that.");
            Line();
            Line("| pass | causal | d | T | fused ms (median / min) | fused GFLOP/s | unfused ms (median / min) | unfused GFLOP/s | fused speed-up |");
            Line("|---|---|---:|---:|---:|---:|---:|---:|---:|");
            foreach (var group in attention.GroupBy(r => (Pass: (string)r.Shape["pass"], Causal: (bool)r.Shape["causal"], D: (int)r.Shape["d"], T: (int)r.Shape["t"])))
            {
                var fused = group.FirstOrDefault(r => r.Impl == "fused");
                var unfused = group.FirstOrDefault(r => r.Impl == "unfused");
                Line($"| {(group.Key.Pass == "fwd" ? "forward" : "forward+backward")} | {(group.Key.Causal ? "yes" : "no")} | {group.Key.D} | {group.Key.T} | {Times(fused)} | {RateOf(fused)} | {Times(unfused)} | {RateOf(unfused)} | {Ratio(unfused, fused)} |");
            }
            Line();
        }

        var rowwise = results.Where(r => r.Op is "softmax_fwd" or "softmax_bwd" or "layernorm_fwd" or "layernorm_bwd").ToList();
        if (rowwise.Count > 0)
        {
            Line("## Row-wise kernels: bandwidth");
            Line();
            Line("GB/s = fewest bytes read + written / time: softmax forward 2·R·C floats, backward 3·R·C; layernorm forward 2·N·C + 2·C + 2·N, backward 3·N·C + 3·C + 2·N.");
            Line();
            Line("| kernel | shape | ms (median / min) | GB/s (median) | GB/s (best) |");
            Line("|---|---|---:|---:|---:|");
            foreach (var r in rowwise)
                Line($"| {r.Op.Replace('_', ' ')} | {r.Shape["rows"]} × {r.Shape["cols"]} | {Times(r)} | {RateOf(r)} | {(r.Error is null ? Rate(r.BestRate) : "–")} |");
            Line();
        }

        var training = results.Where(r => r.Op == "train_step").ToList();
        if (training.Count > 0)
        {
            Line("## Training throughput (decoder-only language model, FP32)");
            Line();
            Line("One optimizer step: forward, loss, backward of each micro-batch, AdamW with the global-norm clip (what `train` does per step, without data loading, evaluation or checkpoints), on random tokens, after at least three untimed steps.");
            Line();
            Line("| case | tokens per step | ms per step (median / min) | tokens/s (median) | tokens/s (best) |");
            Line("|---|---:|---:|---:|---:|");
            foreach (var r in training)
            {
                var perStep = (int)r.Shape["T"] * (int)r.Shape["batch"];
                var tokens = r.Error is null ? (r.Rate * r.MedianMs / 1e3).ToString("N0", C) : perStep.ToString("N0", C);
                Line($"| {r.Description} | {tokens} | {Times(r)} | {(r.Error is null ? r.Rate.ToString("N0", C) : "–")} | {(r.Error is null ? r.BestRate.ToString("N0", C) : "–")} |");
            }
            Line();
        }

        var generation = results.Where(r => r.Op == "generate").ToList();
        if (generation.Count > 0)
        {
            Line("## Greedy generation (batch 1, key/value cache, FP32)");
            Line();
            Line("One generation: the prompt in one prefill, then each new token alone (its logits read back, the argmax taken on the host); tokens/s = new tokens / the whole generation's time.");
            Line();
            Line("| case | new tokens | ms per generation (median / min) | tokens/s (median) | tokens/s (best) |");
            Line("|---|---:|---:|---:|---:|");
            foreach (var r in generation)
                Line($"| {r.Description} | {r.Shape["new"]} | {Times(r)} | {(r.Error is null ? r.Rate.ToString("N0", C) : "–")} | {(r.Error is null ? r.BestRate.ToString("N0", C) : "–")} |");
            Line();
        }

        if (options.Check)
        {
            var failed = results.Where(r => r.Check == "FAIL").Select(r => r.Description).ToList();
            Line(failed.Count == 0
                ? "Every workload was checked once against its C# reference (computed in double): all within tolerance."
                : $"Checks FAILED for: {string.Join("; ", failed)}.");
            Line();
        }
        foreach (var error in results.Where(r => r.Error is not null))
            Line($"- Not measured: {error.Description}: {error.Error}");
        return text.ToString();
    }

    private static double OneMinute(string loadAverage) =>
        double.TryParse(loadAverage.Split(',')[0], NumberStyles.Float, C, out var load) ? load : 0;

    private static string Quote(string argument) =>
        argument.Any(ch => char.IsWhiteSpace(ch) || ch is '"' or '\'' or '*') ? $"'{argument}'" : argument;

    private static string Ms(double ms) => ms.ToString(ms >= 100 ? "F1" : ms >= 1 ? "F3" : "F4", C);

    private static string Rate(double rate) => double.IsFinite(rate) ? rate.ToString(rate >= 100 ? "F0" : rate >= 10 ? "F1" : "F2", C) : "–";

    /// <summary>A matmul's size column: n for a square product, M×N×K otherwise.</summary>
    private static string MatmulSize(IReadOnlyDictionary<string, object> shape) =>
        shape.TryGetValue("m", out var m) ? $"{m}×{shape["n"]}×{shape["k"]}" : $"{shape["n"]}";

    private static string Times(Measurement? r) =>
        r is null ? "–" : r.Error is not null ? "error" : $"{Ms(r.MedianMs)} / {Ms(r.MinMs)}";

    private static string RateOf(Measurement? r) => r is null || r.Error is not null ? "–" : Rate(r.Rate);

    /// <summary>How many times faster <paramref name="fast"/> is than <paramref name="slow"/> (median times).</summary>
    private static string Ratio(Measurement? slow, Measurement? fast) =>
        slow is null || fast is null || slow.Error is not null || fast.Error is not null
            ? "–"
            : $"{(slow.MedianMs / fast.MedianMs).ToString("F2", C)}×";
}
