using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using GpuTransformer.Training.Data;
using GpuTransformer.Training.Tokenizers;
using Spectre.Console;

namespace GpuTransformer.Cli.Commands;

/// <summary>
/// <c>corpus</c>: fetches (if needed) and describes a corpus: documents, bytes, splits, and for
/// each tokenizer its vocabulary, tokens per split and the unigram perplexity baseline on the
/// validation split.
/// </summary>
public static class CorpusCommand
{
    public static Command Create(CliContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var selection = new CorpusSelection();
        var tokenizers = new Option<string[]>("--tokenizers")
        {
            Description = $"Tokenizers to measure (default all: {string.Join(", ", TokenizerFactory.Kinds)})",
            AllowMultipleArgumentsPerToken = true,
            DefaultValueFactory = _ => [.. TokenizerFactory.Kinds],
        };
        tokenizers.Validators.Add(result =>
        {
            foreach (var kind in result.GetValueOrDefault<string[]>() ?? [])
            {
                try
                {
                    TokenizerFactory.ParseKind(kind);
                }
                catch (ArgumentException e)
                {
                    result.AddError(e.Message.Split(" (Parameter", 2)[0]);
                }
            }
        });
        var command = new Command("corpus", "Fetch (once) and describe a corpus: documents, splits, tokens per tokenizer, unigram perplexity baseline");
        selection.AddTo(command);
        command.Options.Add(tokenizers);
        context.SetAction(command, parse => Run(context, parse, selection, parse.GetValue(tokenizers) ?? []));
        return command;
    }

    private static int Run(CliContext context, ParseResult parse, CorpusSelection selection, string[] kinds)
    {
        var corpus = selection.Load(context, parse);
        var c = CultureInfo.InvariantCulture;
        var console = context.Out;
        console.MarkupLine(Markup.Escape($"Corpus '{corpus.Name}' from {corpus.Source}"));
        console.MarkupLine(Markup.Escape($"Split: {corpus.SplitRule}"));

        var splits = new Table().Border(TableBorder.Rounded).AddColumns("split", "documents", "bytes", "characters");
        foreach (var split in Enum.GetValues<CorpusSplit>())
        {
            var docs = corpus.Documents(split);
            splits.AddRow(split.ToString().ToLowerInvariant(), docs.Count.ToString("N0", c), corpus.Bytes(split).ToString("N0", c), docs.Sum(d => (long)d.Text.Length).ToString("N0", c));
        }
        splits.AddRow("all", corpus.DocumentCount.ToString("N0", c), corpus.TotalBytes.ToString("N0", c), "");
        console.Write(splits);

        var table = new Table().Border(TableBorder.Rounded)
            .Title("Tokenizers (vocabulary from train; baseline: train unigram, add-one smoothing, scored on valid; bits/byte compares across tokenizers)")
            .AddColumns("tokenizer", "vocabulary", "train tokens", "valid tokens", "test tokens", "bytes/token", "valid <unk>", "unigram nats/token", "unigram ppl", "unigram bits/byte", "time");
        foreach (var kind in kinds.Select(TokenizerFactory.ParseKind).Distinct())
        {
            var clock = Stopwatch.StartNew();
            var tokenizer = TokenizerFactory.Create(kind, corpus.Train.Select(d => d.Text));
            var tokens = TokenizedCorpus.Create(corpus, tokenizer);
            var baseline = UnigramBaseline.OnValidation(tokens);
            table.AddRow(
                tokenizer.Name, tokenizer.VocabularySize.ToString("N0", c),
                tokens.Train.Length.ToString("N0", c), tokens.Valid.Length.ToString("N0", c), tokens.Test.Length.ToString("N0", c),
                (corpus.Bytes(CorpusSplit.Train) / (double)tokens.Train.Length).ToString("F2", c),
                tokenizer.Specials.Unk is int unk ? (tokens.Valid.Count(id => id == unk) / (double)tokens.Valid.Length).ToString("P2", c) : "n/a",
                baseline.CrossEntropy.ToString("F3", c), baseline.Perplexity.ToString("N1", c),
                (baseline.CrossEntropy * tokens.Valid.Length / corpus.Bytes(CorpusSplit.Valid) / Math.Log(2)).ToString("F3", c),
                $"{clock.Elapsed.TotalSeconds.ToString("F1", c)} s");
        }
        console.Write(table);
        return 0;
    }
}
