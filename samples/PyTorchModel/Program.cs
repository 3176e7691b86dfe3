// Loads a language model exported from PyTorch (scripts/parity/export_pytorch.py: a safetensors
// state dict with PyTorch's names, metadata model = language_model and its config) and continues
// a few token ids greedily, by sampling, and by beam search.
//   dotnet run -- <model.safetensors> [auto|cuda|opencl|cpu]   (backend default: GPUTRANSFORMER_BACKEND, else auto)
// The ids stand for themselves: a model trained with a tokenizer would encode and decode text with it.
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Layers;
using GpuTransformer.Layers.IO;
using GpuTransformer.Training.Generation;

try
{
    if (args.Length < 1)
        throw new ArgumentException("usage: PyTorchModel <model.safetensors> [backend]");
    var path = args[0];
    if (!File.Exists(path))
        throw new ArgumentException($"Model file '{path}' does not exist.");
    var backend = args.Length > 1 ? args[1] : Environment.GetEnvironmentVariable("GPUTRANSFORMER_BACKEND") ?? "auto";
    using var device = ComputeDevice.Create(backend);
    Console.WriteLine($"device: {device}");

    // The kind and config come from the file's metadata; an encoder-decoder file is refused here.
    var file = SafeTensors.Read(path);
    if (StateDict.ModelKind(file) is var kind && kind != StateDict.LanguageModelKind)
        throw new InvalidDataException($"'{path}' holds a '{kind}' model, not a '{StateDict.LanguageModelKind}'.");
    var config = StateDict.ReadLanguageModelConfig(file);
    using var model = new LanguageModel(device, config);
    // Exported files hold the parameters only; the parity golden files (tests/golden/parity) also hold inputs and outputs.
    StateDict.Load(model, file, new StateDictLoadOptions { IgnoreExtraTensors = true });
    model.Training = false;
    Console.WriteLine($"model: {config.NumLayers} layers, d_model {config.DModel}, vocabulary {config.VocabularySize}, {model.ParameterCount():N0} parameters");

    int[] context = [1, 2, 3];
    foreach (var (name, sampling) in new[] { ("greedy", new SamplingOptions { Greedy = true }), ("sampled", new SamplingOptions { Temperature = 0.8, Seed = 1 }) })
    {
        var (ids, _, _, _) = LanguageModelGenerator.GenerateIds(model, context, new GenerationOptions { MaxTokens = 8, Sampling = sampling });
        Console.WriteLine($"{name}: [{string.Join(", ", context)}] → [{string.Join(", ", ids)}]");
    }

    // Beam search over the same model: <bos> = 1 (the first context id), <eos> = 0 ends a hypothesis.
    const int Width = 3;
    var beams = SequenceDecoding.BeamSearch(new RecomputingScorer(model, Width), sources: 1,
        new BeamSearchOptions { Width = Width }, bos: 1, eos: 0);
    foreach (var hypothesis in beams)
        Console.WriteLine($"beam (best of {Width}): [{string.Join(", ", hypothesis.Tokens)}] log p {hypothesis.LogProbability:F3}");
    return 0;
}
catch (Exception e) when (e is ArgumentException or InvalidOperationException or InvalidDataException)
{
    // An ArgumentException's message ends with " (Parameter 'name')": the line says it without.
    var message = e is ArgumentException { ParamName: { } name } ? e.Message.Replace($" (Parameter '{name}')", "", StringComparison.Ordinal) : e.Message;
    Console.Error.WriteLine($"error: {message}");
    return 1;
}

/// <summary>
/// Beam search's view of a language model: each row's history, its next-token log-probabilities
/// from a forward over the whole history (simple, and enough at these sizes; a KV cache would reuse it).
/// </summary>
internal sealed class RecomputingScorer(LanguageModel model, int rows) : ISequenceScorer
{
    private List<int>[] histories = [.. Enumerable.Range(0, rows).Select(_ => new List<int>())];

    public int Rows => rows;

    public int VocabularySize => model.Config.VocabularySize;

    public int MaxSteps => model.Config.MaxSequenceLength;

    public void Step(ReadOnlySpan<int> lastTokens, Span<double> logProbabilities)
    {
        var v = VocabularySize;
        for (var r = 0; r < rows; r++)
        {
            var history = histories[r];
            history.Add(lastTokens[r]);
            var logits = model.Forward(new TokenIds(history.ToArray(), 1, history.Count)).ToArray(); // [1, T, V]
            var last = logits.AsSpan((history.Count - 1) * v, v);
            var max = double.NegativeInfinity;
            foreach (var x in last)
                max = Math.Max(max, x);
            var sum = 0.0;
            foreach (var x in last)
                sum += Math.Exp(x - max);
            for (var i = 0; i < v; i++)
                logProbabilities[(r * v) + i] = last[i] - max - Math.Log(sum);
        }
    }

    public void Reorder(ReadOnlySpan<int> parents)
    {
        var previous = histories;
        histories = [.. parents.ToArray().Select(p => new List<int>(previous[p]))];
    }
}
