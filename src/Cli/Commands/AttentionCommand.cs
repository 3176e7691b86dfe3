using System.CommandLine;
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Layers;
using GpuTransformer.Reporting;
using GpuTransformer.Training.Generation;
using GpuTransformer.Training.Inspection;
using GpuTransformer.Training.Tasks;

namespace GpuTransformer.Cli.Commands;

/// <summary>
/// <c>attention</c>: per-layer and per-head attention heatmaps (PNG, tokens on the axes) of a
/// trained model for one input: a language model's causal self-attention for <c>--prompt</c>, or
/// the translation model's encoder self-attention, decoder self-attention and cross-attention for
/// <c>--input</c> (the target is <c>--target</c>, or else the model's own greedy translation).
/// </summary>
public static class AttentionCommand
{
    /// <summary>Default output folder.</summary>
    public const string DefaultOutput = "runs/attention";

    public static Command Create(CliContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var checkpoint = new Option<string>("--checkpoint")
        {
            Description = "A language-model checkpoint, or a translate checkpoint",
            Required = true,
            HelpName = "path",
        };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer JSON file, for a language-model checkpoint that does not store its tokenizer", HelpName = "path" };
        var prompt = new Option<string?>("--prompt", "-p") { Description = "Language model: the text whose attention is drawn" };
        var input = new Option<string?>("--input", "-i") { Description = "Translation model: the number in digits, e.g. 4072" };
        var target = new Option<string?>("--target") { Description = "Translation model: the target words (default: the model's greedy translation)" };
        var output = new Option<string>("--output", "-o") { Description = "Folder for the PNG files", DefaultValueFactory = _ => DefaultOutput, HelpName = "folder" };
        var gridsOnly = new Option<bool>("--grids-only") { Description = "Write only one grid per layer, not a file per head" };
        var command = new Command("attention", "Draw per-layer and per-head attention heatmaps (PNG) of a trained model for a prompt (language model) or a number (translate checkpoint)");
        foreach (var option in new Option[] { checkpoint, tokenizer, prompt, input, target, output, gridsOnly })
            command.Options.Add(option);
        context.SetAction(command, parse =>
        {
            var path = parse.GetValue(checkpoint)!;
            var file = ModelCheckpoint.Read(path);
            using var device = ComputeDevice.Create(context.Backend(parse), context.DeviceOptions(parse));
            var maps = StateDict.ModelKind(file) == StateDict.TransformerKind
                ? TranslationMaps(device, path, parse.GetValue(input), parse.GetValue(target), parse.GetValue(prompt))
                : LanguageModelMaps(device, path, parse.GetValue(tokenizer), parse.GetValue(prompt), parse.GetValue(input));
            var folder = parse.GetValue(output)!;
            var written = AttentionHeatmap.SaveMaps(maps, folder, singleHeads: !parse.GetValue(gridsOnly));
            var first = maps[0];
            context.Output.WriteLine($"Tokens ({first.Keys}): {string.Join(' ', first.KeyLabels)}");
            context.Output.WriteLine($"Wrote {written.Count} PNG files to {folder}:");
            foreach (var png in written.Where(p => !p.Contains("-head", StringComparison.Ordinal)))
                context.Output.WriteLine($"  {png}");
            if (written.Count > maps.Count)
                context.Output.WriteLine($"  … and one file per head ({written.Count - maps.Count}), e.g. {written.First(p => p.Contains("-head", StringComparison.Ordinal))}");
            return 0;
        });
        return command;
    }

    private static IReadOnlyList<AttentionMap> LanguageModelMaps(ComputeDevice device, string path, string? tokenizerPath, string? prompt, string? input)
    {
        if (input is not null)
            throw new ArgumentException("--input is for translate checkpoints; this is a language model: use --prompt.");
        if (string.IsNullOrEmpty(prompt))
            throw new ArgumentException("A language model needs --prompt \"some text\".");
        var (model, tokenizer) = ModelCheckpoint.LoadLanguageModel(device, path, tokenizerPath);
        using (model)
        {
            var ids = tokenizer.Encode(prompt);
            if (ids.Length > model.Config.MaxSequenceLength)
                throw new ArgumentException($"The prompt has {ids.Length} tokens, more than max_seq_len {model.Config.MaxSequenceLength}.");
            return AttentionMaps.ForLanguageModel(model, ids, [.. ids.Select(tokenizer.TokenText)]);
        }
    }

    private static IReadOnlyList<AttentionMap> TranslationMaps(ComputeDevice device, string path, string? input, string? target, string? prompt)
    {
        if (prompt is not null)
            throw new ArgumentException("--prompt is for language models; this is a translate checkpoint: use --input 4072.");
        if (string.IsNullOrWhiteSpace(input))
            throw new ArgumentException("A translate checkpoint needs --input (a number in digits, e.g. 4072).");
        var (model, task, _) = NumberTranslation.Load(device, path);
        using (model)
        {
            var source = task.EncodeSource(input);
            var words = target is null
                ? NumberTranslation.Translate(model, task, [input])[0]
                : target;
            var targetIds = task.Target.Encode(words.Split(' ', StringSplitOptions.RemoveEmptyEntries));
            if (targetIds.Length + 1 > model.Config.MaxSequenceLength)
                throw new ArgumentException($"The target has {targetIds.Length} words, more than the model's {model.Config.MaxSequenceLength - 1}.");
            return AttentionMaps.ForTransformer(model, [source], [[TaskVocabulary.Bos, .. targetIds]], 0,
                id => task.Source.Tokens[id], id => task.Target.Tokens[id]);
        }
    }
}
