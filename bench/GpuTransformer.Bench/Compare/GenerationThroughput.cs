using System.Globalization;
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Kernels.Workloads;
using GpuTransformer.Layers;
using GpuTransformer.Kernels.Profiling;
using GpuTransformer.Training;
using GpuTransformer.Training.Generation;

namespace GpuTransformer.Bench.Compare;

/// <summary>
/// Greedy generation to time: a <c>train</c> preset's model, a prompt of <see cref="Prompt"/>
/// random tokens and <see cref="NewTokens"/> new ones, batch 1, with the key/value cache — what
/// <c>generate</c> does, without the tokenizer.
/// </summary>
/// <param name="Name">The preset.</param>
/// <param name="Config">Its model (the vocabulary its tokenizer has on the default corpus).</param>
/// <param name="Prompt">Context tokens run in one prefill.</param>
/// <param name="NewTokens">Tokens generated one position at a time.</param>
public sealed record GenerationCase(string Name, LanguageModelConfig Config, int Prompt, int NewTokens)
{
    /// <summary>
    /// The case of <paramref name="preset"/>: a prompt of max_seq_len / 8 tokens, then as many new
    /// tokens as fill the context (no sliding window: every step attends over a growing cache).
    /// </summary>
    public static GenerationCase FromPreset(LanguageModelPreset preset)
    {
        ArgumentNullException.ThrowIfNull(preset);
        var config = preset.ModelConfig(TrainingCase.VocabularyOf(preset.Tokenizer));
        var prompt = Math.Max(1, config.MaxSequenceLength / 8);
        return new GenerationCase(preset.Name, config, prompt, config.MaxSequenceLength - prompt);
    }

    /// <summary>
    /// The keys the report and PyTorch's script share; as text (<see cref="Spec"/>) it is what
    /// <c>bench/gpu/torch_reference.py --generate</c> takes.
    /// </summary>
    public IReadOnlyDictionary<string, object> Shape
    {
        get
        {
            var shape = TrainingCase.ModelShape(Config);
            shape["prompt"] = Prompt;
            shape["new"] = NewTokens;
            return shape;
        }
    }

    /// <summary>The shape as "vocab=…,d_model=…,…,new=…".</summary>
    public string Spec => string.Join(",", Shape.Select(p => string.Create(CultureInfo.InvariantCulture, $"{p.Key}={p.Value}")));

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"greedy generation {Name}: d_model {Config.DModel}, {Config.NHead} heads, {Config.NumLayers} layers, d_ff {Config.DimFeedforward}, vocab {Config.VocabularySize}, batch 1, prompt {Prompt} + {NewTokens} new tokens, key/value cache, {(Config.NormFirst ? "pre-LN" : "post-LN")}");
}

/// <summary>Times whole greedy generations of <see cref="GenerationCase"/>s (random weights and prompt: the speed does not depend on them).</summary>
public static class GenerationThroughput
{
    /// <summary>Median and fastest time of one generation (prefill + every new token) of <paramref name="generationCase"/>.</summary>
    public static WorkloadTiming Measure(ComputeDevice device, GenerationCase generationCase, TimingPlan plan)
    {
        var (model, generate) = Prepare(device, generationCase);
        using (model)
            return WorkloadTimer.Measure(generate, device.Synchronize, plan with { MinSampleSeconds = 0 });
    }

    /// <summary>The profile (per generated token) of one generation after an unprofiled one.</summary>
    public static ProfileReport Profile(ComputeDevice device, GenerationCase generationCase)
    {
        var (model, generate) = Prepare(device, generationCase);
        using (model)
        {
            generate();
            var profiler = KernelProfiler.Attach(device);
            try
            {
                using var decode = device.InPhase(ProfilePhase.Decode);
                profiler.Start();
                generate();
                profiler.Stop(generationCase.NewTokens);
                return profiler.Report(generationCase.ToString(), "token");
            }
            finally
            {
                profiler.Detach();
            }
        }
    }

    private static (LanguageModel Model, Action Generate) Prepare(ComputeDevice device, GenerationCase generationCase)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(generationCase);
        var random = new Random(1);
        var prompt = new int[generationCase.Prompt];
        for (var i = 0; i < prompt.Length; i++)
            prompt[i] = random.Next(generationCase.Config.VocabularySize);
        var options = new GenerationOptions
        {
            MaxTokens = generationCase.NewTokens,
            Sampling = new SamplingOptions { Greedy = true },
            StopAtEos = false,
            Overflow = ContextOverflow.Refuse,
        };
        var model = new LanguageModel(device, generationCase.Config, seed: 1);
        return (model, () =>
        {
            var (ids, _, _, _) = LanguageModelGenerator.GenerateIds(model, prompt, options);
            if (ids.Length != generationCase.NewTokens)
                throw new InvalidOperationException($"Generation stopped after {ids.Length} of {generationCase.NewTokens} tokens.");
        });
    }
}
