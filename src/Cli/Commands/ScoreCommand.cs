using System.CommandLine;
using System.Globalization;
using System.Text.Encodings.Web;
using System.Text.Json;
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Layers;
using GpuTransformer.Reporting;
using GpuTransformer.Training;
using GpuTransformer.Training.Data;
using GpuTransformer.Training.Generation;
using GpuTransformer.Training.Scoring;
using GpuTransformer.Training.Tasks;
using GpuTransformer.Training.Tokenizers;
using Spectre.Console;

namespace GpuTransformer.Cli.Commands;

/// <summary>
/// <c>score</c>: how likely a trained model finds each text. A language model scores every token
/// given the ones before it (<see cref="LanguageModelScorer"/>); a translate checkpoint scores
/// candidate translations of one <c>--input</c> (<see cref="TranslationScorer"/>). Prints a table per
/// text (token, probability, rank, top-3 candidates) and its summary (ln P, mean, perplexity, bits
/// per byte and character); <c>--compare</c> ranks the texts; <c>--json</c>, <c>--picture</c> and
/// <c>--html</c> write everything, a PNG of the next-token distributions, and an interactive page.
/// </summary>
public static class ScoreCommand
{
    /// <summary>The --json file's conventions: snake_case names as the state dicts and configs use, readable text.</summary>
    internal static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    public static Command Create(CliContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var o = new Options();
        var command = new Command("score",
            "Score texts with a trained model: per token its probability, rank and the model's top candidates; the whole text's probability by the chain rule; compare phrasings");
        o.AddTo(command);
        context.SetAction(command, parse => Run(context, parse, o));
        return command;
    }

    private sealed class Options
    {
        public Option<string> Checkpoint { get; } = new("--checkpoint")
        {
            Description = "A language-model checkpoint (file or run folder), or a translate checkpoint",
            Required = true,
            HelpName = "path",
        };

        public Option<string?> Tokenizer { get; } = new("--tokenizer") { Description = "Tokenizer JSON file, for a language-model checkpoint that does not store its tokenizer", HelpName = "path" };

        public Option<string[]> Text { get; } = new("--text") { Description = "A text to score (repeat for several)", HelpName = "text" };

        public Option<string?> File { get; } = new("--file", "-f") { Description = "A file with one text to score per line (blank lines skipped)", HelpName = "path" };

        public Option<string?> Input { get; } = new("--input", "-i") { Description = "Translate checkpoint: the number in digits whose candidate translations (--text) are scored" };

        public Option<bool> Compare { get; } = new("--compare") { Description = "Rank the texts by probability" };

        public Option<int> TopK { get; } = new Option<int>("--top-k") { Description = "Candidates kept per position (the table shows 3)", DefaultValueFactory = _ => 5 }.InRange(1, int.MaxValue);

        public Option<int?> Window { get; } = new Option<int?>("--window") { Description = "Tokens per forward (default: the model's context); longer texts slide by --stride" }.InRange(1, 1 << 20);

        public Option<int?> Stride { get; } = new Option<int?>("--stride") { Description = "Tokens between window starts (default: half the window)" }.InRange(1, 1 << 20);

        public Option<int> BatchSize { get; } = new Option<int>("--batch-size") { Description = "Windows (or candidates) per forward", DefaultValueFactory = _ => 8 }.InRange(1, 4096);

        public Option<bool> EndOfText { get; } = new("--end-of-text") { Description = "Also score <eos> after each text (the text as a whole document)" };

        public Option<string?> Json { get; } = new("--json") { Description = "Write every number to this JSON file", HelpName = "file.json" };

        public Option<string?> Picture { get; } = new("--picture") { Description = "Draw the next-token distributions (top-k per position, the actual token marked) to this PNG", HelpName = "file.png" };

        public Option<string?> Html { get; } = new("--html") { Description = "Write an interactive page (tokens, distributions, attention of every layer and head) to this HTML file", HelpName = "file.html" };

        public void AddTo(Command command)
        {
            foreach (var option in new Option[] { Checkpoint, Tokenizer, Text, File, Input, Compare, TopK, Window, Stride, BatchSize, EndOfText, Json, Picture, Html })
                command.Options.Add(option);
        }
    }

    /// <summary>What to score and where to write it, read from the command line.</summary>
    private sealed record Request(string CheckpointPath, IReadOnlyList<string> Texts, ScoringOptions Options, bool Compare, string? Json, string? Picture, string? Html);

    private static int Run(CliContext context, ParseResult parse, Options o)
    {
        var texts = Texts(parse.GetValue(o.Text), parse.GetValue(o.File));
        var request = new Request(
            CheckpointPath(parse.GetValue(o.Checkpoint)!),
            texts,
            new ScoringOptions
            {
                TopK = parse.GetValue(o.TopK),
                Window = parse.GetValue(o.Window),
                Stride = parse.GetValue(o.Stride),
                BatchSize = parse.GetValue(o.BatchSize),
                ScoreEndOfText = parse.GetValue(o.EndOfText),
            },
            parse.GetValue(o.Compare), parse.GetValue(o.Json), parse.GetValue(o.Picture), parse.GetValue(o.Html));
        var file = ModelCheckpoint.Read(request.CheckpointPath);
        var input = parse.GetValue(o.Input);
        return StateDict.ModelKind(file) switch
        {
            StateDict.LanguageModelKind when input is not null =>
                throw new ArgumentException("--input is for translate checkpoints; this is a language model: give the texts with --text."),
            StateDict.LanguageModelKind => ScoreTexts(context, parse, request, file, parse.GetValue(o.Tokenizer)),
            StateDict.TransformerKind => ScoreTranslations(context, parse, request, input),
            var kind => throw new InvalidDataException($"'{request.CheckpointPath}' holds a '{kind}' model; score takes a {StateDict.LanguageModelKind} or a translate ({StateDict.TransformerKind}) checkpoint."),
        };
    }

    private static int ScoreTexts(CliContext context, ParseResult parse, Request request, Layers.IO.SafeTensorFile file, string? tokenizerPath)
    {
        // Every check before the device and the weights: options against the config, texts against the tokenizer.
        var config = StateDict.ReadLanguageModelConfig(file);
        var tokenizer = ModelCheckpoint.Tokenizer(file, tokenizerPath);
        var options = request.Options.Validate(config.VocabularySize, config.MaxSequenceLength);
        var sequences = LanguageModelScorer.Encode(tokenizer, request.Texts, options);
        var window = options.WindowFor(config.MaxSequenceLength);
        if (request.Html is not null && Array.FindIndex(sequences, s => s.Length - 1 > window) is var tooLong and >= 0)
        {
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture,
                $"--html shows the attention of one forward per text, but text {tooLong + 1} has {sequences[tooLong].Length - 1} tokens to score, more than the window of {window}: shorten it."));
        }

        using var device = ComputeDevice.Create(context.Backend(parse), context.DeviceOptions(parse));
        var (model, _) = ModelCheckpoint.LoadLanguageModel(device, file, tokenizerPath);
        using (model)
        {
            var scorer = new LanguageModelScorer(model, tokenizer);
            var scores = scorer.Score(request.Texts, options);
            var description = string.Create(CultureInfo.InvariantCulture,
                $"language model: d_model {config.DModel}, {config.NumLayers} layers × {config.NHead} heads, context {config.MaxSequenceLength}, {TokenizerFactory.Describe(tokenizer)}; {request.CheckpointPath}");
            Report(context, request, scores, description,
                () => [.. scores.Select((s, i) => new ScorePageText(s, scorer.Attention(s), Title(i, s.Text!), scorer.TokenText(s.Ids[0])))],
                tokenizer is WordTokenizer ? " " : "");
        }
        return 0;
    }

    private static int ScoreTranslations(CliContext context, ParseResult parse, Request request, string? input)
    {
        CheckpointFile checkpoint;
        NumbersToWordsTask task;
        try
        {
            checkpoint = Checkpoint.Read(request.CheckpointPath);
            task = NumberTranslation.ReadTask(checkpoint);
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException(
                $"'{request.CheckpointPath}' holds an encoder–decoder that is not a translate checkpoint: score takes a language model or a {NumbersToWordsTask.Name} translate checkpoint ({e.Message})", e);
        }
        if (string.IsNullOrWhiteSpace(input))
            throw new ArgumentException("A translate checkpoint scores candidate translations of one number: give --input 4072 and the candidates with --text \"four thousand seventy two\".");
        var config = checkpoint.TransformerConfig();
        var options = request.Options.Validate(config.TargetVocabularySize, config.MaxSequenceLength);
        var source = task.EncodeSource(input);
        var pairs = request.Texts.Select((text, i) => new SequencePair(source, CandidateIds(task, text, i))).ToList();

        using var device = ComputeDevice.Create(context.Backend(parse), context.DeviceOptions(parse));
        var (model, _, _) = NumberTranslation.Load(device, request.CheckpointPath);
        using (model)
        {
            var scorer = new TranslationScorer(model, TaskVocabulary.Bos, TaskVocabulary.Eos, id => task.Source.Tokens[id], id => task.Target.Tokens[id]);
            var scores = scorer.Score(pairs, options, request.Texts);
            var description = string.Create(CultureInfo.InvariantCulture,
                $"encoder–decoder ({NumbersToWordsTask.Name}): log P(translation | {input}); d_model {config.DModel}, {config.NumEncoderLayers} + {config.NumDecoderLayers} layers × {config.NHead} heads; {request.CheckpointPath}");
            Report(context, request, scores, description,
                () => [.. scores.Select((s, i) => new ScorePageText(s, scorer.Attention(s), Title(i, s.Text!), task.Target.Tokens[TaskVocabulary.Bos]))], " ");
        }
        return 0;
    }

    /// <summary>Tables, summaries, the ranking, and the files asked for.</summary>
    /// <param name="pages">The page's texts, made only for --html (the attention needs one more forward per text).</param>
    /// <param name="separator">What the page puts between tokens when it writes a context out.</param>
    private static void Report(CliContext context, Request request, IReadOnlyList<SequenceScore> scores, string description, Func<IReadOnlyList<ScorePageText>> pages, string separator)
    {
        var c = CultureInfo.InvariantCulture;
        context.Output.WriteLine(description);
        for (var i = 0; i < scores.Count; i++)
        {
            var score = scores[i];
            context.Output.WriteLine();
            context.Output.WriteLine(string.Create(c, $"{Title(i, score.Text!)} — {score.Tokens.Count} tokens, {score.Windows} {(score.Windows == 1 ? "window" : "windows")}"));
            context.Out.Write(TokenTable(score));
            context.Output.WriteLine(Summary(score));
        }
        if (request.Compare && scores.Count > 1)
        {
            var ranked = Ranking(scores);
            context.Output.WriteLine();
            var table = new Table().Border(TableBorder.Rounded).Title("Texts by probability").AddColumns("rank", "ln P (nats)", "mean/token", "perplexity", "tokens", "text");
            for (var r = 0; r < ranked.Count; r++)
            {
                var s = scores[ranked[r]];
                table.AddRow(Cells(string.Create(c, $"{r + 1}"), string.Create(c, $"{s.TotalLogProbability:F3}"), string.Create(c, $"{s.MeanLogProbability:F4}"),
                    string.Create(c, $"{s.Perplexity:F3}"), string.Create(c, $"{s.Tokens.Count}"), Shorten(s.Text!, 60)));
            }
            context.Out.Write(table);
            var (best, next) = (scores[ranked[0]], scores[ranked[1]]);
            var gap = best.TotalLogProbability - next.TotalLogProbability;
            context.Output.WriteLine(string.Create(c,
                $"\"{Shorten(best.Text!, 40)}\" is {Ratio(Math.Exp(gap))}× as likely as \"{Shorten(next.Text!, 40)}\" (Δ ln P = {gap:F3})."));
        }
        if (request.Json is { } json)
        {
            WriteJson(json, request, scores, description);
            context.Output.WriteLine($"Wrote {json}");
        }
        if (request.Picture is { } picture)
        {
            NextTokenPicture.Save(picture, scores, [.. scores.Select((s, i) => Title(i, s.Text!))]);
            context.Output.WriteLine($"Wrote {picture}");
        }
        if (request.Html is { } html)
        {
            ScorePage.Write(html, $"score: {Path.GetFileName(request.CheckpointPath)}", description, pages(), separator);
            context.Output.WriteLine($"Wrote {html}");
        }
    }

    private static Table TokenTable(SequenceScore score)
    {
        var c = CultureInfo.InvariantCulture;
        var table = new Table().Border(TableBorder.Rounded).AddColumns("#", "token", "P", "ln P", "rank", "entropy", "top-3 next tokens (P)");
        foreach (var token in score.Tokens)
        {
            var top = string.Join("  ", token.TopK.Take(3).Select(t => $"{AttentionHeatmap.Label(t.Text)} {Probability(t.Probability)}{(t.Id == token.Id ? "*" : "")}"));
            table.AddRow(Cells(string.Create(c, $"{token.Position}"), AttentionHeatmap.Label(token.Text), Probability(token.Probability),
                string.Create(c, $"{token.LogProbability:F3}"), string.Create(c, $"{token.Rank}"), string.Create(c, $"{token.Entropy:F3}"), top));
        }
        return table;
    }

    /// <summary>A probability with 4 decimals, or in exponent form below 0.001 (as the HTML page shows them).</summary>
    internal static string Probability(double p) => p.ToString(p >= 0.001 ? "0.0000" : "0.00e+0", CultureInfo.InvariantCulture);

    /// <summary>One line: ln P, P, mean, perplexity, bits per byte and character.</summary>
    internal static string Summary(SequenceScore score)
    {
        ArgumentNullException.ThrowIfNull(score);
        var c = CultureInfo.InvariantCulture;
        var bits = score.BitsPerByte is { } perByte ? string.Create(c, $" · {perByte:F3} bits/byte · {score.BitsPerCharacter:F3} bits/char") : "";
        return string.Create(c,
            $"ln P = {score.TotalLogProbability:F3} nats (P = {Probability(score.Probability)}) · mean {score.MeanLogProbability:F4} nats/token · perplexity {score.Perplexity:F3}{bits}");
    }

    /// <summary>Indices of <paramref name="scores"/> from the most to the least probable (ties keep the given order).</summary>
    internal static IReadOnlyList<int> Ranking(IReadOnlyList<SequenceScore> scores) =>
        [.. Enumerable.Range(0, scores.Count).OrderByDescending(i => scores[i].TotalLogProbability)];

    private static void WriteJson(string path, Request request, IReadOnlyList<SequenceScore> scores, string description)
    {
        var document = new
        {
            Checkpoint = request.CheckpointPath,
            Model = description,
            request.Options,
            Ranking = Ranking(scores),
            Texts = scores,
        };
        var full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        System.IO.File.WriteAllText(full, JsonSerializer.Serialize(document, JsonOptions));
    }

    /// <summary>The texts of --text and --file, in that order.</summary>
    private static List<string> Texts(string[]? given, string? file)
    {
        var texts = new List<string>(given ?? []);
        if (file is not null)
        {
            if (!System.IO.File.Exists(file))
                throw new FileNotFoundException($"Text file '{file}' does not exist.", file);
            var lines = System.IO.File.ReadAllLines(file).Where(line => line.Trim().Length > 0).ToList();
            if (lines.Count == 0)
                throw new ArgumentException($"'{file}' has no texts (one per line; blank lines are skipped).");
            texts.AddRange(lines);
        }
        if (texts.Count == 0)
            throw new ArgumentException("Nothing to score: give --text \"…\" (repeatable) or --file with one text per line.");
        return texts;
    }

    /// <summary>A file, or a run folder holding <see cref="Training.Checkpoint.FileName"/>.</summary>
    private static string CheckpointPath(string path) =>
        Directory.Exists(path) ? Path.Combine(path, Training.Checkpoint.FileName) : path;

    private static int[] CandidateIds(NumbersToWordsTask task, string text, int index)
    {
        var words = text.Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (words.Length == 0)
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"{Title(index, text)} is empty: there is nothing to score."));
        try
        {
            return task.Target.Encode(words);
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"{Title(index, text)} cannot be encoded: {CliContext.WithoutParameterName(e.Message, e)}", e);
        }
    }

    private static string Title(int index, string text) => string.Create(CultureInfo.InvariantCulture, $"Text {index + 1} \"{Shorten(text, 40)}\"");

    private static string Ratio(double ratio) => ratio.ToString(ratio < 1e4 ? "0.##" : "0.00e+0", CultureInfo.InvariantCulture);

    private static string Shorten(string text, int length) => text.Length <= length ? text : text[..(length - 1)] + "…";

    private static string[] Cells(params string[] values) => [.. values.Select(Markup.Escape)];
}
