using System.Globalization;
using GpuTransformer.Kernels;
using GpuTransformer.Kernels.Workloads;

namespace GpuTransformer.Bench.Compare;

/// <summary>What <c>compare</c> runs, from its command line. Defaults: the CPU comparison of issue 2.</summary>
public sealed record CompareOptions
{
    /// <summary>The usage text.</summary>
    public const string Usage = """
        gpu-transformer-bench compare [options]
          --backend NAME         auto (default), cuda, opencl or cpu (the simulator: tiny sizes only make sense)
          --sections LIST        matmul,attention,rowwise,train,generate, run in the order given (default: the first three)
          --matmul-sizes LIST    square sizes n (default 256,512,1024)
          --matmul-shapes LIST   also these MxNxK products (e.g. 8192x256x2048, a language model head's weight
                                 gradient with --layouts TN), after the square ones
          --layouts LIST         NN,NT,TN (default NN)
          --naive-max N          run the naive kernel only up to n = N (default 1024; 0: never)
          --batch B --heads H    attention B and H (default 1 and 8: B·H = 8)
          --head-dims LIST       attention d (default 64)
          --lengths LIST         attention T (default 128,256,512)
          --causal LIST          false,true (default both)
          --passes LIST          fwd,fwdbwd (default both)
          --no-unfused           skip the unfused attention (Matmul + Softmax + Matmul)
          --unfused-max T        run the unfused attention only up to this T (default: no limit)
          --rowwise LIST         RxC shapes for softmax and layernorm (default 1024x1024,4096x1024)
          --train-presets LIST   train section: tiny,cpu,gpu presets of `train` (default cpu)
          --train-config SPEC    train section: also vocab=N,d_model=N,nhead=N,layers=N,d_ff=N,T=N,batch=N
                                 (post-LN, ReLU, untied: the model of bench/gpu/torch_reference.py --train)
          --generate-presets LIST  generate section: greedy generation with the model of these presets (default gpu),
                                 batch 1, prompt max_seq_len/8 tokens, then new tokens up to max_seq_len
          --print-generate-spec PRESET  print the generate section's shape for PRESET (vocab=…,d_model=…,…,new=…, what
                                 bench/gpu/torch_reference.py --generate takes) and exit
          --warmup N             untimed runs first (default 2)
          --reps N               timed runs at least (default 5); --max-reps N (default 50)
          --min-time S           keep timing until the runs add up to S seconds (default 0.5)
          --min-sample-time S    enqueue runs back to back (no synchronization between) until a timed sample
                                 lasts S seconds, at most 1000 per sample (default 0: one run per sample)
          --clock host|events    host: a monotonic clock around launches + synchronize (default); events:
                                 device-side timestamps (CUDA/OpenCL events through ILGPU's profiling markers)
          --time-limit S         stop starting workloads after S seconds (the rest are reported as skipped)
          --check                also check every workload once against its C# reference (slow at large sizes)
          --out FILE.md          write the markdown report there (e.g. bench/results/2025-01-01-pocl.md)
          --json FILE.json       write every measurement as JSON at the end (for scripts)
          --jsonl FILE           append each measurement as one JSON line as soon as it is taken (a killed run keeps them)
          --title TEXT           heading of the report
          --profile FOLDER       train and generate sections: also profile each case with the per-kernel profiler
                                 (untimed; writes train-NAME / generate-NAME .md, .json, .png there)
          --profile-steps N      training steps profiled per case (default 5, after 3 unprofiled)
        """;

    public string Backend { get; init; } = "auto";

    public IReadOnlyList<string> Sections { get; init; } = ["matmul", "attention", "rowwise"];

    public IReadOnlyList<int> MatmulSizes { get; init; } = [256, 512, 1024];

    /// <summary>Products of any shape (<c>--matmul-shapes</c>), run after <see cref="MatmulSizes"/> in each layout.</summary>
    public IReadOnlyList<(int M, int N, int K)> MatmulShapes { get; init; } = [];

    public IReadOnlyList<MatmulLayout> Layouts { get; init; } = [MatmulLayout.NN];

    public int NaiveMax { get; init; } = 1024;

    public int Batch { get; init; } = 1;

    public int Heads { get; init; } = 8;

    public IReadOnlyList<int> HeadDims { get; init; } = [64];

    public IReadOnlyList<int> Lengths { get; init; } = [128, 256, 512];

    public IReadOnlyList<bool> Causal { get; init; } = [false, true];

    public IReadOnlyList<bool> Backward { get; init; } = [false, true];

    public bool Unfused { get; init; } = true;

    public int UnfusedMax { get; init; } = int.MaxValue;

    public IReadOnlyList<(int Rows, int Columns)> RowShapes { get; init; } = [(1024, 1024), (4096, 1024)];

    public TimingPlan Timing { get; init; } = new(2, 5, 50, 0.5);

    public IReadOnlyList<string> TrainPresets { get; init; } = ["cpu"];

    public string? TrainConfig { get; init; }

    public IReadOnlyList<string> GeneratePresets { get; init; } = ["gpu"];

    /// <summary>Time with device events (<c>--clock events</c>) rather than the host clock.</summary>
    public bool DeviceEvents { get; init; }

    public bool Check { get; init; }

    public double TimeLimit { get; init; } = double.PositiveInfinity;

    public string? Out { get; init; }

    public string? Json { get; init; }

    public string? Jsonl { get; init; }

    public string? Title { get; init; }

    /// <summary>Folder of the per-kernel profiles (<c>--profile</c>), or null.</summary>
    public string? Profile { get; init; }

    /// <summary>Training steps per profile.</summary>
    public int ProfileSteps { get; init; } = 5;

    /// <summary>The arguments as given (for the report's command line).</summary>
    public IReadOnlyList<string> Arguments { get; init; } = [];

    /// <summary>Parses <paramref name="args"/> (the words after <c>compare</c>).</summary>
    /// <exception cref="ArgumentException">An unknown option or a bad value; the message says which.</exception>
    public static CompareOptions Parse(IReadOnlyList<string> args)
    {
        ArgumentNullException.ThrowIfNull(args);
        var options = new CompareOptions { Arguments = args };
        var timing = options.Timing;
        for (var i = 0; i < args.Count; i++)
        {
            var name = args[i];
            string Value() => i + 1 < args.Count ? args[++i] : throw new ArgumentException($"{name} needs a value.");
            options = name switch
            {
                "--backend" or "-b" => options with { Backend = Value() },
                "--sections" => options with { Sections = Words(Value(), ["matmul", "attention", "rowwise", "train", "generate"], name) },
                "--train-presets" => options with { TrainPresets = Words(Value(), ["tiny", "cpu", "gpu"], name) },
                "--train-config" => options with { TrainConfig = Validated(Value()) },
                "--generate-presets" => options with { GeneratePresets = Words(Value(), ["tiny", "cpu", "gpu"], name) },
                "--clock" => options with { DeviceEvents = Words(Value(), ["host", "events"], name) is ["events"] },
                "--matmul-sizes" => options with { MatmulSizes = Ints(Value(), name) },
                "--matmul-shapes" => options with { MatmulShapes = Products(Value(), name) },
                "--layouts" => options with { Layouts = Words(Value(), ["NN", "NT", "TN"], name).Select(Enum.Parse<MatmulLayout>).ToList() },
                "--naive-max" => options with { NaiveMax = NonNegative(Value(), name) },
                "--batch" => options with { Batch = Int(Value(), name) },
                "--heads" => options with { Heads = Int(Value(), name) },
                "--head-dims" => options with { HeadDims = Ints(Value(), name) },
                "--lengths" => options with { Lengths = Ints(Value(), name) },
                "--causal" => options with { Causal = Words(Value(), ["false", "true"], name).Select(bool.Parse).ToList() },
                "--passes" => options with { Backward = Words(Value(), ["fwd", "fwdbwd"], name).Select(p => p == "fwdbwd").ToList() },
                "--no-unfused" => options with { Unfused = false },
                "--unfused-max" => options with { UnfusedMax = Int(Value(), name) },
                "--rowwise" => options with { RowShapes = Shapes(Value(), name) },
                "--check" => options with { Check = true },
                "--time-limit" => options with { TimeLimit = double.Parse(Value(), CultureInfo.InvariantCulture) },
                "--out" => options with { Out = Value() },
                "--json" => options with { Json = Value() },
                "--jsonl" => options with { Jsonl = Value() },
                "--title" => options with { Title = Value() },
                "--profile" => options with { Profile = Value() },
                "--profile-steps" => options with { ProfileSteps = Int(Value(), name) },
                "--warmup" => Timed(options, timing = timing with { Warmup = NonNegative(Value(), name) }),
                "--reps" => Timed(options, timing = WithRepetitions(timing, Int(Value(), name))),
                "--max-reps" => Timed(options, timing = timing with { MaxRepetitions = Int(Value(), name) }),
                "--min-time" => Timed(options, timing = timing with { MinSeconds = double.Parse(Value(), CultureInfo.InvariantCulture) }),
                "--min-sample-time" => Timed(options, timing = timing with { MinSampleSeconds = Seconds(Value(), name) }),
                _ => throw new ArgumentException($"Unknown option '{name}'."),
            };
        }
        if (options.Timing.MaxRepetitions < options.Timing.MinRepetitions)
            throw new ArgumentException($"--max-reps {options.Timing.MaxRepetitions} is below --reps {options.Timing.MinRepetitions}.");
        return options;
    }

    private static string Validated(string trainConfig)
    {
        _ = TrainingCase.Parse(trainConfig);
        return trainConfig;
    }

    private static TimingPlan WithRepetitions(TimingPlan timing, int repetitions) =>
        timing with { MinRepetitions = repetitions, MaxRepetitions = Math.Max(timing.MaxRepetitions, repetitions) };

    private static CompareOptions Timed(CompareOptions options, TimingPlan timing) => options with { Timing = timing };

    private static int Int(string value, string name) =>
        int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var result) && result > 0
            ? result
            : throw new ArgumentException($"{name} needs a positive integer, got '{value}'.");

    private static double Seconds(string value, string name) =>
        double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var result) && result >= 0 && double.IsFinite(result)
            ? result
            : throw new ArgumentException($"{name} needs a number of seconds ≥ 0, got '{value}'.");

    private static int NonNegative(string value, string name) =>
        int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var result) && result >= 0
            ? result
            : throw new ArgumentException($"{name} needs an integer ≥ 0, got '{value}'.");

    private static List<int> Ints(string value, string name) => value.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(v => Int(v.Trim(), name)).ToList();

    private static List<string> Words(string value, string[] allowed, string name)
    {
        var words = value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();
        var unknown = words.FirstOrDefault(w => !allowed.Contains(w, StringComparer.Ordinal));
        return unknown is null && words.Count > 0
            ? words
            : throw new ArgumentException($"{name} takes a list of {string.Join(", ", allowed)}; got '{value}'.");
    }

    private static List<(int, int, int)> Products(string value, string name) => value
        .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
        .Select(shape => shape.Split('x') is [var m, var n, var k]
            ? (Int(m, name), Int(n, name), Int(k, name))
            : throw new ArgumentException($"{name} takes MxNxK shapes, got '{shape}'."))
        .ToList();

    private static List<(int, int)> Shapes(string value, string name) => value
        .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
        .Select(shape => shape.Split('x') is [var rows, var columns]
            ? (Int(rows, name), Int(columns, name))
            : throw new ArgumentException($"{name} takes RxC shapes, got '{shape}'."))
        .ToList();
}
