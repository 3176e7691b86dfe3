// Trains a small language model on a text file, with a progress callback and a learning-rate
// schedule of our own (ILearningRateSchedule), then prints a greedy continuation.
//   dotnet run -- <text file> [auto|cuda|opencl|cpu] [steps] [model.safetensors to write]   (backend default: GPUTRANSFORMER_BACKEND, else auto)
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Layers;
using GpuTransformer.Training;
using GpuTransformer.Training.Data;
using GpuTransformer.Training.Generation;
using GpuTransformer.Training.Reporting;
using GpuTransformer.Training.Schedules;
using GpuTransformer.Training.Tokenizers;

try
{
    if (args.Length < 1)
        throw new ArgumentException("usage: TrainOnText <text file> [backend] [steps] [model.safetensors to write]");
    var path = args[0];
    if (!File.Exists(path))
        throw new ArgumentException($"Text file '{path}' does not exist.");
    var backend = args.Length > 1 ? args[1] : Environment.GetEnvironmentVariable("GPUTRANSFORMER_BACKEND") ?? "auto";
    var steps = args.Length > 2 ? int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture) : 60;
    using var device = ComputeDevice.Create(backend);
    Console.WriteLine($"device: {device}");

    // The file's paragraphs, split by document into train and validation; bytes as tokens.
    var corpus = Corpora.Load(path);
    var tokens = TokenizedCorpus.Create(corpus, new ByteTokenizer());
    var config = new LanguageModelConfig
    {
        DModel = 64, NHead = 4, NumLayers = 2, DimFeedforward = 128, Dropout = 0f,
        VocabularySize = tokens.Tokenizer.VocabularySize, MaxSequenceLength = 64,
        EmbeddingInit = LanguageModelConfig.ScaledNormalEmbeddingInit,
    };
    using var model = new LanguageModel(device, config, seed: 1);
    var task = new LanguageModelTask(model, tokens, CorpusIdentity.Of(corpus, path, 0, tokens),
        batchSize: 8, contextLength: 32, dataSeed: 1, evaluationWindows: 8);
    var options = new TrainerOptions { Steps = steps, EvaluateEvery = Math.Max(1, steps / 2) };
    using var trainer = new Trainer(task, options, schedule: new StepDecay(3e-3, every: 20, factor: 0.5));
    var result = trainer.Run(new ConsoleProgress(every: 10));
    Console.WriteLine($"{result.Status} at step {result.Step}: validation loss {result.Validation?.Loss:F3}");

    model.Training = false;
    var prompt = tokens.Tokenizer.Decode(tokens.Train.AsSpan(0, Math.Min(12, tokens.Train.Length)));
    var generated = LanguageModelGenerator.Generate(model, tokens.Tokenizer, prompt,
        new GenerationOptions { MaxTokens = 40, Sampling = new SamplingOptions { Greedy = true } });
    Console.WriteLine($"generated: {prompt}|{generated.Text}");
    if (args.Length > 3)
    {
        ModelCheckpoint.SaveLanguageModel(model, tokens.Tokenizer, args[3]);
        Console.WriteLine($"wrote {args[3]}");
    }
    return 0;
}
catch (Exception e) when (e is ArgumentException or InvalidOperationException or CorpusException or FormatException)
{
    // An ArgumentException's message ends with " (Parameter 'name')": the line says it without.
    var message = e is ArgumentException { ParamName: { } name } ? e.Message.Replace($" (Parameter '{name}')", "", StringComparison.Ordinal) : e.Message;
    Console.Error.WriteLine($"error: {message}");
    return 1;
}

/// <summary>A schedule of our own: the rate halves (×<c>factor</c>) every <c>every</c> steps.</summary>
internal sealed class StepDecay(double initial, int every, double factor) : ILearningRateSchedule
{
    public double At(long step)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(step, 1);
        return initial * Math.Pow(factor, (step - 1) / every);
    }
}

/// <summary>The progress callback: one line every <c>every</c> steps, and the trainer's own lines.</summary>
internal sealed class ConsoleProgress(int every) : ITrainingProgress
{
    public void Report(ProgressUpdate update)
    {
        if (update.Step % every == 0)
            Console.WriteLine($"step {update.Step}: loss {update.Loss:F3}, {update.TokensPerSecond:F0} tokens/s");
    }

    public void Log(string line) => Console.WriteLine(line);
}
