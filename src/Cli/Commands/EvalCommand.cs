using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Layers;
using GpuTransformer.Training;
using GpuTransformer.Training.Data;
using GpuTransformer.Training.Tokenizers;

namespace GpuTransformer.Cli.Commands;

/// <summary>
/// <c>eval</c>: the loss and perplexity of a trained language model (a <c>train</c> checkpoint) on the
/// validation or test split of its corpus (or of another corpus given with <c>--corpus</c>, tokenised
/// with the checkpoint's tokenizer), every non-overlapping window of the split unless
/// <c>--max-windows</c> limits them, next to the unigram baseline of the same tokenizer.
/// </summary>
public static class EvalCommand
{
    public static Command Create(CliContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var checkpoint = new Argument<string>("checkpoint") { Description = "A checkpoint file or a run folder (holding checkpoint.safetensors)" };
        var selection = new CorpusSelection();
        var split = new Option<string>("--split")
        {
            Description = "Split to evaluate: valid or test",
            DefaultValueFactory = _ => "valid",
            HelpName = "valid|test",
        };
        split.AcceptOnlyFromAmong("valid", "test");
        var tokenizer = new Option<string?>("--tokenizer", "-t") { Description = "Expected tokenizer: an error if the checkpoint's is another" };
        var batchSize = new Option<int?>("--batch-size") { Description = "Windows per batch (default: the training batch size)" }.InRange(1, 1 << 20);
        var maxWindows = new Option<int?>("--max-windows") { Description = "Score at most this many windows (default: all)" }.InRange(1, int.MaxValue);
        var command = new Command("eval", "Evaluate a trained language model on its corpus's validation or test split: loss, perplexity, unigram baseline")
        {
            checkpoint,
        };
        selection.AddTo(command);
        command.Options.Add(split);
        command.Options.Add(tokenizer);
        command.Options.Add(batchSize);
        command.Options.Add(maxWindows);
        context.SetAction(command, parse => Run(context, parse, parse.GetValue(checkpoint)!, selection, parse.GetValue(split)!, parse.GetValue(tokenizer),
            parse.GetValue(batchSize), parse.GetValue(maxWindows)));
        return command;
    }

    private static int Run(CliContext context, ParseResult parse, string path, CorpusSelection selection, string splitName, string? requestedTokenizer,
        int? batchSize, int? maxWindows)
    {
        var clock = Stopwatch.StartNew();
        var c = CultureInfo.InvariantCulture;
        var checkpoint = Checkpoint.Read(path);
        var storedTokenizer = checkpoint.Tokenizer(); // checked against its fingerprint before the corpus is loaded
        if (requestedTokenizer is not null)
            TokenizerFactory.EnsureSameKind(storedTokenizer, requestedTokenizer); // … and against --tokenizer's kind (its vocabulary needs the corpus)
        var config = checkpoint.LanguageModelConfig();
        var settings = LanguageModelTaskSettings.Read(checkpoint);
        var identity = checkpoint.Corpus();
        var corpusArgument = parse.GetResult(selection.Corpus) is { Implicit: false } ? parse.GetValue(selection.Corpus) : identity.Location;
        var splitSeed = parse.GetResult(selection.SplitSeed) is { Implicit: false } ? parse.GetValue(selection.SplitSeed) : identity.SplitSeed;
        var corpus = Corpora.Load(corpusArgument, context.CorpusOptions(parse) with { SplitSeed = splitSeed });
        var tokenizer = requestedTokenizer is null ? storedTokenizer : checkpoint.Tokenizer(TokenizerFactory.Create(requestedTokenizer, corpus.Train.Select(d => d.Text)));
        var which = splitName == "test" ? CorpusSplit.Test : CorpusSplit.Valid;
        var stream = TokenizedCorpus.Encode(tokenizer, corpus.Documents(which));
        var train = TokenizedCorpus.Encode(tokenizer, corpus.Train);
        var baseline = UnigramBaseline.Compute(train, stream, tokenizer.VocabularySize);

        using var device = ComputeDevice.Create(context.Backend(parse), context.DeviceOptions(parse));
        var batch = batchSize ?? settings.BatchSize;
        DeviceMemory.RequireFits(config, batch, settings.ContextLength, device.Description, device.Tuning);
        using var model = new LanguageModel(device, config);
        checkpoint.LoadModel(model);
        var result = LanguageModelTask.Evaluate(model, stream, batch, settings.ContextLength, maxWindows);

        var output = context.Output;
        output.WriteLine(string.Create(c, $"Checkpoint: {checkpoint.Path} (step {checkpoint.Step}, {model.ParameterCount():N0} parameters)"));
        output.WriteLine(string.Create(c, $"Corpus: {corpus.Name}, {splitName} split ({stream.Length:N0} tokens; {corpus.SplitRule})"));
        output.WriteLine($"Tokenizer: {TokenizerFactory.Describe(tokenizer)}");
        output.WriteLine($"Device: {device.Description.BackendName}:{device.Description.IndexInBackend} {device.Description.Name}");
        output.WriteLine(string.Create(c, $"Scored {result.Tokens:N0} tokens in windows of {settings.ContextLength} ({clock.Elapsed.TotalSeconds:F1} s)"));
        output.WriteLine(string.Create(c, $"{splitName} loss {result.Loss:F4} nats/token, perplexity {result.Perplexity:F2}"));
        output.WriteLine(string.Create(c, $"unigram baseline: loss {baseline.CrossEntropy:F4} nats/token, perplexity {baseline.Perplexity:F2}"));
        return 0;
    }
}
