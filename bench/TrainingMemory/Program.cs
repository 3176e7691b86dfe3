// Device memory held during a training step (weights, gradients, activations, AdamW, kernel scratch)
// against MemoryEstimate, for the configs of docs/memory.md. Each config gets a fresh device.
//   dotnet run -c Release --project bench/TrainingMemory -- [backend=opencl] [configs=tiny,tiny-seq2seq,reference]
using System.Globalization;
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Layers;
using GpuTransformer.Training.Diagnostics;

var arguments = args.Select(a => a.Split('=', 2)).ToDictionary(a => a[0], a => a.Length > 1 ? a[1] : "");
var backend = arguments.GetValueOrDefault("backend", "opencl");
var wanted = arguments.GetValueOrDefault("configs", "tiny,tiny-seq2seq,reference").Split(',');
var c = CultureInfo.InvariantCulture;

// PLATFORM.md's two CPU benchmark language models (dropout 0.1, pre-LN, tied, one padded row), and a small seq2seq model.
var configs = new Dictionary<string, (string About, Func<ComputeDevice, TrainingMemory> Run)>
{
    ["tiny"] = ("LM d_model 128, 8 heads, 2 layers, d_ff 512, vocab 256, [B 8, T 64]",
        device => Lm(device, new LanguageModelConfig { DModel = 128, NHead = 8, NumLayers = 2, DimFeedforward = 512, VocabularySize = 256, MaxSequenceLength = 64, PadId = 0 }, 8, 64)),
    ["tiny-seq2seq"] = ("Transformer d_model 128, 8 heads, 2+2 layers, d_ff 512, shared vocab 1000, [B 8, S 48, T 40]",
        device => Seq2Seq(device, new TransformerConfig { DModel = 128, NHead = 8, NumEncoderLayers = 2, NumDecoderLayers = 2, DimFeedforward = 512, SourceVocabularySize = 1000, TargetVocabularySize = 1000, ShareEmbeddings = true, MaxSequenceLength = 64, PadId = 0 }, 8, 48, 40)),
    ["reference"] = ("LM d_model 256, 8 heads, 4 layers, d_ff 1024, vocab 8192, [B 16, T 128]",
        device => Lm(device, new LanguageModelConfig { DModel = 256, NHead = 8, NumLayers = 4, DimFeedforward = 1024, VocabularySize = 8192, MaxSequenceLength = 128, PadId = 0 }, 16, 128)),
};

Console.WriteLine("| config | parameters | weights | gradients | activations | AdamW | kernel scratch | total held | MemoryEstimate.Total | estimate − measured | growth after step 1 | s/step |");
Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|---|");
foreach (var name in wanted)
{
    var (about, run) = configs[name];
    using var device = ComputeDevice.Create(backend, new DeviceOptions { AllowPortableOpenCL = true });
    var m = run(device);
    Console.WriteLine(string.Create(c,
        $"| {name}: {about} | {m.Parameters / 4:N0} | {MiB(m.Parameters)} | {MiB(m.Gradients)} | {MiB(m.Activations)} | {MiB(m.Optimizer)} | {MiB(m.Scratch)} | " +
        $"**{MiB(m.Total)}** ({m.Total:N0} B) | {MiB(m.Estimate.Total)} ({m.Estimate.Total:N0} B) | {m.Estimate.Total - m.Total:N0} B ({m.EstimateError:0.000%}) | " +
        $"{m.GrowthAfterFirstStep:N0} B | {m.SecondsPerStep:F2} |"));
    Console.WriteLine(string.Create(c,
        $"| estimate's parts | | {MiB(m.Estimate.Parameters)} | {MiB(m.Estimate.Gradients)} | {MiB(m.Estimate.Activations)} | {MiB(m.Estimate.OptimizerState)} | {MiB(m.Estimate.Scratch)} | | | | | |"));
}
Console.WriteLine($"device: {backend}; MiB = 2^20 bytes");

static string MiB(long bytes) => (bytes / 1048576.0).ToString("F2", CultureInfo.InvariantCulture);

static TrainingMemory Lm(ComputeDevice device, LanguageModelConfig config, int batch, int length)
{
    var (ids, targets) = (new int[batch * length], new int[batch * length]);
    var random = new Random(1);
    for (var n = 0; n < ids.Length; n++)
        (ids[n], targets[n]) = (random.Next(1, config.VocabularySize), random.Next(1, config.VocabularySize));
    ids.AsSpan(ids.Length - (length / 4)).Clear(); // the last row ends in padding (the estimate assumes a key padding mask)
    targets.AsSpan(targets.Length - (length / 4)).Clear();
    var (x, y) = (new TokenIds(ids, batch, length), new TokenIds(targets, batch, length));
    return TrainingMemory.Measure(device, () => new LanguageModel(device, config), new ModelBatch(x, y), MemoryEstimate.For(config, batch, length));
}

static TrainingMemory Seq2Seq(ComputeDevice device, TransformerConfig config, int batch, int sourceLength, int targetLength)
{
    var random = new Random(2);
    int[] Ids(int count, int padFrom) => Enumerable.Range(0, count).Select(n => n >= padFrom ? 0 : random.Next(3, config.TargetVocabularySize)).ToArray();
    var source = new TokenIds(Ids(batch * sourceLength, (batch * sourceLength) - (sourceLength / 3)), batch, sourceLength);
    var targetInput = new TokenIds(Ids(batch * targetLength, (batch * targetLength) - (targetLength / 3)), batch, targetLength);
    var targetOutput = new TokenIds(Ids(batch * targetLength, (batch * targetLength) - (targetLength / 3)), batch, targetLength);
    return TrainingMemory.Measure(device, () => new Transformer(device, config), new ModelBatch(targetInput, targetOutput) { Source = source },
        MemoryEstimate.For(config, batch, sourceLength, targetLength));
}
