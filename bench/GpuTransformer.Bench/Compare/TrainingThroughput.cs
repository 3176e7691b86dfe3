using System.Globalization;
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Kernels.Workloads;
using GpuTransformer.Layers;
using GpuTransformer.Kernels.Profiling;
using GpuTransformer.Training;
using GpuTransformer.Training.Optimization;
using GpuTransformer.Training.Tokenizers;

namespace GpuTransformer.Bench.Compare;

/// <summary>
/// A decoder-only language model to time: the model config, the micro-batch [B, T] and how many
/// micro-batches make one optimizer step.
/// </summary>
/// <param name="Name">Preset name (tiny, cpu, gpu) or "custom".</param>
/// <param name="Config">The model.</param>
/// <param name="Batch">B.</param>
/// <param name="Accumulate">Micro-batches per optimizer step.</param>
/// <param name="Shape">The keys the report and PyTorch's script share (vocab, d_model, nhead, layers, d_ff, T, batch).</param>
public sealed record TrainingCase(string Name, LanguageModelConfig Config, int Batch, int Accumulate, IReadOnlyDictionary<string, object> Shape)
{
    /// <summary>cl100k BPE compacted to the default corpus's training split (<c>gpu-transformer corpus --tokenizers bpe-cl100k</c>).</summary>
    private const int SotuBpeVocabulary = 24_876;

    /// <summary>Vocabulary sizes the presets' tokenizers have on the default corpus: the byte tokenizer's, or <see cref="SotuBpeVocabulary"/>.</summary>
    public static int VocabularyOf(string tokenizer) =>
        tokenizer.StartsWith("bpe", StringComparison.Ordinal) ? SotuBpeVocabulary : new ByteTokenizer().VocabularySize;

    /// <summary>Tokens one optimizer step trains on.</summary>
    public long TokensPerStep => (long)Batch * Config.MaxSequenceLength * Accumulate;

    /// <summary>The case of a <c>train</c> preset, as <c>train --preset</c> builds it.</summary>
    public static TrainingCase FromPreset(LanguageModelPreset preset)
    {
        ArgumentNullException.ThrowIfNull(preset);
        var config = preset.ModelConfig(VocabularyOf(preset.Tokenizer));
        return new TrainingCase(preset.Name, config, preset.BatchSize, preset.Accumulate, ShapeOf(config, preset.BatchSize));
    }

    /// <summary>
    /// A custom case from "vocab=8192,d_model=256,nhead=8,layers=4,d_ff=1024,T=128,batch=16" (the
    /// PyTorch script's --train): post-LN, ReLU, untied output projection, no dropout, like its
    /// nn.TransformerEncoderLayer model (which differs only by having no final LayerNorm and a bias
    /// on the output projection: d_model + vocab parameters, no measurable time).
    /// </summary>
    /// <exception cref="ArgumentException">A missing or unknown key, or a value that is not a positive integer.</exception>
    public static TrainingCase Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        string[] keys = ["vocab", "d_model", "nhead", "layers", "d_ff", "T", "batch"];
        var values = new Dictionary<string, int>();
        foreach (var item in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var parts = item.Split('=', 2);
            if (parts.Length != 2 || !keys.Contains(parts[0]) || !int.TryParse(parts[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out var value) || value <= 0)
                throw new ArgumentException($"--train-config takes {string.Join(",", keys.Select(k => k + "=N"))}; '{item}' is not one of them with a positive integer.");
            values[parts[0]] = value;
        }
        var missing = keys.Where(k => !values.ContainsKey(k)).ToList();
        if (missing.Count > 0)
            throw new ArgumentException($"--train-config is missing {string.Join(", ", missing)}.");
        var config = new LanguageModelConfig
        {
            VocabularySize = values["vocab"], DModel = values["d_model"], NHead = values["nhead"], NumLayers = values["layers"],
            DimFeedforward = values["d_ff"], MaxSequenceLength = values["T"], Dropout = 0, Activation = "relu", NormFirst = false,
            TieWeights = false, ScaleEmbeddings = true, PadId = -1,
        }.Validate();
        return new TrainingCase("custom", config, values["batch"], 1, ShapeOf(config, values["batch"]));
    }

    /// <summary>The model's keys of a report shape, as PyTorch's script names them: vocab, d_model, nhead, layers, d_ff, T.</summary>
    internal static Dictionary<string, object> ModelShape(LanguageModelConfig config) => new()
    {
        ["vocab"] = config.VocabularySize,
        ["d_model"] = config.DModel,
        ["nhead"] = config.NHead,
        ["layers"] = config.NumLayers,
        ["d_ff"] = config.DimFeedforward,
        ["T"] = config.MaxSequenceLength,
    };

    private static Dictionary<string, object> ShapeOf(LanguageModelConfig config, int batch)
    {
        var shape = ModelShape(config);
        shape["batch"] = batch;
        return shape;
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"train step {Name}: d_model {Config.DModel}, {Config.NHead} heads, {Config.NumLayers} layers, d_ff {Config.DimFeedforward}, vocab {Config.VocabularySize}, [{Batch}, {Config.MaxSequenceLength}]{(Accumulate > 1 ? $" × {Accumulate}" : "")}, {(Config.NormFirst ? "pre-LN" : "post-LN")}, dropout {Config.Dropout}");
}

/// <summary>
/// Times whole optimizer steps of <see cref="TrainingCase"/>s on random tokens (throughput does
/// not depend on the text): forward, loss, backward for each micro-batch, then AdamW with the
/// global-norm clip — what <see cref="Trainer"/> does per step, without data loading, evaluation
/// or checkpoints. <see cref="Profile"/> runs the same steps under the <see cref="KernelProfiler"/>.
/// </summary>
public static class TrainingThroughput
{
    /// <summary>Median and fastest step time of <paramref name="trainingCase"/> on <paramref name="device"/>.</summary>
    public static WorkloadTiming Measure(ComputeDevice device, TrainingCase trainingCase, TimingPlan plan)
    {
        using var run = new TrainingRun(device, trainingCase);
        return WorkloadTimer.Measure(run.Step, device.Synchronize, plan);
    }

    /// <summary>The profile of <paramref name="steps"/> steps after <paramref name="warmup"/> unprofiled ones.</summary>
    public static ProfileReport Profile(ComputeDevice device, TrainingCase trainingCase, int steps, int warmup = 3)
    {
        using var run = new TrainingRun(device, trainingCase);
        for (var i = 0; i < warmup; i++)
            run.Step();
        var profiler = KernelProfiler.Attach(device);
        try
        {
            profiler.Start();
            for (var i = 0; i < steps; i++)
                run.Step();
            profiler.Stop(steps);
            return profiler.Report(trainingCase.ToString());
        }
        finally
        {
            profiler.Detach();
        }
    }

    /// <summary>A model, its optimizer and one batch of random tokens.</summary>
    private sealed class TrainingRun : IDisposable
    {
        private readonly LanguageModel model;
        private readonly AdamWOptimizer optimizer;
        private readonly ModelBatch microBatch;
        private readonly int accumulate;

        public TrainingRun(ComputeDevice device, TrainingCase trainingCase)
        {
            ArgumentNullException.ThrowIfNull(device);
            ArgumentNullException.ThrowIfNull(trainingCase);
            var config = trainingCase.Config;
            var (batch, length) = (trainingCase.Batch, config.MaxSequenceLength);
            var random = new Random(1);
            var tokens = new int[(batch * length) + 1];
            for (var i = 0; i < tokens.Length; i++)
                tokens[i] = random.Next(config.VocabularySize);
            microBatch = new ModelBatch(new TokenIds(tokens.AsMemory(0, batch * length), batch, length), new TokenIds(tokens.AsMemory(1, batch * length), batch, length));
            model = new LanguageModel(device, config, seed: 1);
            optimizer = new AdamWOptimizer(model.Parameters(), new AdamWOptions { MaxGradNorm = 1 });
            model.Training = true;
            accumulate = trainingCase.Accumulate;
        }

        public void Step()
        {
            model.ZeroGradients();
            for (var i = 0; i < accumulate; i++)
                model.TrainStep(microBatch, 1f / accumulate);
            optimizer.Step(1e-4, readNorm: true);
        }

        public void Dispose()
        {
            optimizer.Dispose();
            model.Dispose();
        }
    }
}
