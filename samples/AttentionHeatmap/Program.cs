// The attention probabilities of every layer of a language model over one sentence, saved as
// heatmaps with the tokens on the axes (one grid of heads per layer, one file per head).
//   dotnet run -- <model.safetensors> "<sentence>" [out folder] [auto|cuda|opencl|cpu]
// The model file holds its tokenizer: a train checkpoint, or ModelCheckpoint.SaveLanguageModel's file
// (TrainOnText's fourth argument writes one).
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Reporting;
using GpuTransformer.Training.Generation;
using GpuTransformer.Training.Inspection;

try
{
    if (args.Length < 2)
        throw new ArgumentException("usage: AttentionHeatmap <model.safetensors> \"<sentence>\" [out folder] [backend]");
    var (path, sentence) = (args[0], args[1]);
    var folder = args.Length > 2 ? args[2] : "attention";
    var backend = args.Length > 3 ? args[3] : Environment.GetEnvironmentVariable("GPUTRANSFORMER_BACKEND") ?? "auto";
    if (!File.Exists(path))
        throw new ArgumentException($"Model file '{path}' does not exist.");
    using var device = ComputeDevice.Create(backend);

    // Refuses an encoder-decoder file or one without a tokenizer, naming the file.
    var (model, tokenizer) = ModelCheckpoint.LoadLanguageModel(device, path);
    using (model)
    {
        var ids = tokenizer.Encode(sentence);
        if (ids.Length == 0 || ids.Length > model.Config.MaxSequenceLength)
            throw new ArgumentException($"The sentence is {ids.Length} tokens; the model reads 1 to {model.Config.MaxSequenceLength}.");
        var labels = ids.Select(id => AttentionHeatmap.Label(tokenizer.TokenText(id))).ToList();
        var maps = AttentionMaps.ForLanguageModel(model, ids, labels);
        foreach (var written in AttentionHeatmap.SaveMaps(maps, folder, singleHeads: false))
            Console.WriteLine($"wrote {written}");
    }
    return 0;
}
catch (Exception e) when (e is ArgumentException or InvalidOperationException or InvalidDataException)
{
    // An ArgumentException's message ends with " (Parameter 'name')": the line says it without.
    var message = e is ArgumentException { ParamName: { } name } ? e.Message.Replace($" (Parameter '{name}')", "", StringComparison.Ordinal) : e.Message;
    Console.Error.WriteLine($"error: {message}");
    return 1;
}
