using System.Text.Json.Nodes;
using GpuTransformer.Cli;
using GpuTransformer.Training.Generation;
using GpuTransformer.Training.Scoring;
using static GpuTransformer.Tests.Infrastructure.CliRuns;

namespace GpuTransformer.Tests.Scoring;

/// <summary>
/// <c>score</c> in-process: tables, summaries, the ranking and the three files for a saved
/// language model (the JSON holds the API's numbers for the same model), candidate translations
/// with a tiny translate checkpoint, and bad input → one error line with the right exit code.
/// PoCL when present, else the CPU simulator.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class ScoreCommandTests : IDisposable
{
    private static readonly LanguageModelConfig Config = new()
    {
        DModel = 16, NHead = 2, NumLayers = 1, DimFeedforward = 16, VocabularySize = 259, MaxSequenceLength = 16, PadId = 256,
    };

    private readonly TempFolder folder = new();
    private readonly string checkpoint;

    public ScoreCommandTests()
    {
        checkpoint = Path.Combine(folder.Path, "lm.safetensors");
        using var device = ComputeDevice.Create("cpu");
        using var model = new LanguageModel(device, Config, seed: 3);
        model.SaveStateDict(checkpoint, new Dictionary<string, string> { [ModelCheckpoint.TokenizerKey] = TokenizerFactory.ToJson(new ByteTokenizer()) });
    }

    public void Dispose() => folder.Dispose();

    [Fact]
    public void Scores_compares_and_writes_json_picture_and_page_with_the_APIs_numbers()
    {
        var (json, picture, html) = (Path.Combine(folder.Path, "s.json"), Path.Combine(folder.Path, "s.png"), Path.Combine(folder.Path, "s.html"));
        var file = folder.Write("texts.txt", "\nba dc\n\n");
        var (code, output, error) = Run("score", "--checkpoint", checkpoint, "--text", "ab cd", "--file", file, "--compare", "--top-k", "4",
            "--json", json, "--picture", picture, "--html", html);
        Assert.Equal("", error);
        Assert.Equal(0, code);
        Assert.Contains("language model: d_model 16, 1 layers × 2 heads, context 16, byte", output);
        Assert.Contains("Text 1 \"ab cd\" — 5 tokens, 1 window", output);
        Assert.Contains("Text 2 \"ba dc\" — 5 tokens, 1 window", output);
        Assert.Matches(@"│ #\s*│ token\s*│ P\s*│ ln P\s*│ rank\s*│ entropy\s*│ top-3 next tokens \(P\)", output);
        Assert.Matches(@"│ 3\s*│ ·\s*│ (0\.\d{4}|\d\.\d\de-\d+)\s*│ -\d+\.\d{3}\s*│ \d+\s*│", output);
        Assert.Matches(@"ln P = -\d+\.\d{3} nats \(P = (0\.\d{4}|\d\.\d\de-\d+)\) · mean -\d+\.\d{4} nats/token · perplexity \d+\.\d{3} · \d+\.\d{3} bits/byte · \d+\.\d{3} bits/char", output);
        Assert.Contains("Texts by probability", output);
        Assert.Matches(@"""(ab cd|ba dc)"" is [\d.]+× as likely as ""(ab cd|ba dc)"" \(Δ ln P = \d\.\d{3}\)\.", output);
        Assert.Contains($"Wrote {json}", output);

        // The JSON holds the API's numbers for the same model, options and batch.
        using var device = ComputeDevice.Create(CliRuns.Backend, new DeviceOptions { AllowPortableOpenCL = true });
        var (model, tokenizer) = ModelCheckpoint.LoadLanguageModel(device, checkpoint);
        using (model)
        {
            var expected = new LanguageModelScorer(model, tokenizer).Score(["ab cd", "ba dc"], new ScoringOptions { TopK = 4 });
            var document = JsonNode.Parse(File.ReadAllText(json))!;
            Assert.Equal(4, document["options"]!["top_k"]!.GetValue<int>());
            var texts = document["texts"]!.AsArray();
            Assert.Equal(2, texts.Count);
            for (var i = 0; i < 2; i++)
            {
                Assert.Equal(expected[i].Text, texts[i]!["text"]!.GetValue<string>());
                Assert.Equal(expected[i].TotalLogProbability, texts[i]!["total_log_probability"]!.GetValue<double>());
                var tokens = texts[i]!["tokens"]!.AsArray();
                Assert.Equal(expected[i].Tokens.Count, tokens.Count);
                for (var t = 0; t < tokens.Count; t++)
                {
                    Assert.Equal(expected[i].Tokens[t].LogProbability, tokens[t]!["log_probability"]!.GetValue<double>());
                    Assert.Equal(expected[i].Tokens[t].Rank, tokens[t]!["rank"]!.GetValue<int>());
                    Assert.Equal(expected[i].Tokens[t].TopK.Select(c => c.Id), tokens[t]!["top_k"]!.AsArray().Select(c => c!["id"]!.GetValue<int>()));
                }
            }
            var ranking = document["ranking"]!.AsArray().Select(r => r!.GetValue<int>()).ToList();
            Assert.Equal(expected[0].TotalLogProbability >= expected[1].TotalLogProbability ? [0, 1] : [1, 0], ranking);
        }
        var (width, height) = Fixtures.PngSize(picture);
        Assert.True(width >= 640 && height > 300, $"picture {width}×{height}");
        var page = File.ReadAllText(html);
        Assert.Contains("<script type=\"application/json\" id=\"score-data\">", page);
        Assert.DoesNotContain("http://", page.Replace("http://www.w3.org/2000/svg", "", StringComparison.Ordinal));
        Assert.DoesNotContain("https://", page);
    }

    [Fact]
    public void A_text_longer_than_the_window_slides()
    {
        var (code, output, error) = Run("score", "--checkpoint", folder.Path + "/lm.safetensors", "--text", "a text of twenty-four b", "--window", "8", "--stride", "4");
        Assert.Equal("", error);
        Assert.Equal(0, code);
        var windows = ScoringWindows.Plan(24, 8, 4).Count;
        Assert.Contains($"Text 1 \"a text of twenty-four b\" — 23 tokens, {windows} windows", output);
    }

    [Fact]
    public void Scores_candidate_translations_with_a_translate_checkpoint()
    {
        var translate = Path.Combine(folder.Path, "translate", Checkpoint.FileName);
        var (code, _, error) = Run("translate", "--out", Path.GetDirectoryName(translate)!, "--digits", "2", "--d-model", "16", "--heads", "2", "--layers", "1", "--d-ff", "32",
            "--batch-size", "16", "--steps", "4", "--eval-every", "4", "--held-out", "4", "--beam", "1", "--examples", "0", "--warmup", "2");
        Assert.Equal("", error);
        Assert.Equal(0, code);
        var html = Path.Combine(folder.Path, "t.html");
        string output;
        (code, output, error) = Run("score", "--checkpoint", translate, "--input", "42", "--text", "forty two", "--text", "twenty four", "--compare", "--html", html);
        Assert.Equal("", error);
        Assert.Equal(0, code);
        Assert.Contains("encoder–decoder (numbers-to-words): log P(translation | 42)", output);
        Assert.Contains("Text 1 \"forty two\" — 3 tokens, 1 window", output);
        Assert.Matches(@"│ 3\s*│ <eos>\s*│", output);
        Assert.Contains("Texts by probability", output);
        Assert.Contains("cross-attention", File.ReadAllText(html));

        (code, _, error) = Run("score", "--checkpoint", translate, "--input", "42", "--text", "forty too");
        Assert.Equal(CliApp.Failure, code);
        AssertOneLineError(error, "Text 1 \"forty too\" cannot be encoded: 'too' is not in the vocabulary");
        (code, _, error) = Run("score", "--checkpoint", translate, "--text", "forty two");
        Assert.Equal(CliApp.Failure, code);
        AssertOneLineError(error, "A translate checkpoint scores candidate translations of one number: give --input 4072");
        (code, _, error) = Run("score", "--checkpoint", checkpoint, "--input", "42", "--text", "forty two");
        Assert.Equal(CliApp.Failure, code);
        AssertOneLineError(error, "--input is for translate checkpoints; this is a language model");
    }

    [Fact]
    public void Bad_input_is_one_error_line()
    {
        (string[] Args, int Code, string Message)[] cases =
        [
            (["--text", ""], CliApp.Failure, "The text \"\" is empty: there is nothing to score."),
            ([], CliApp.Failure, "Nothing to score: give --text"),
            (["--text", "a", "--top-k", "0"], CliApp.UsageError, "--top-k must be between 1 and"),
            (["--text", "a", "--top-k", "260"], CliApp.Failure, "Top-k must be between 1 and the model's vocabulary of 259 ids, got 260."),
            (["--text", "a", "--window", "17"], CliApp.Failure, "A window of 17 tokens is larger than the model's context (max_seq_len 16)."),
            (["--text", "a", "--window", "4", "--stride", "5"], CliApp.Failure, "The stride must be between 1 and the window (4), got 5."),
            (["--text", "a text longer than the window", "--html", Path.Combine(folder.Path, "x.html")], CliApp.Failure,
                "--html shows the attention of one forward per text, but text 1 has 29 tokens to score, more than the window of 16"),
            (["--file", Path.Combine(folder.Path, "missing.txt")], CliApp.Failure, "does not exist"),
        ];
        foreach (var (args, expectedCode, message) in cases)
        {
            var (code, _, error) = Run(["score", "--checkpoint", checkpoint, .. args]);
            Assert.Equal(expectedCode, code);
            Assert.Contains(message, error.Split('\n')[0]);
        }
        var (c, _, e) = Run("score", "--checkpoint", Path.Combine(ParitySpec.GoldenDirectory, "transformer_post_relu.safetensors"), "--input", "42", "--text", "x");
        Assert.Equal(CliApp.Failure, c);
        AssertOneLineError(e, "is not a translate checkpoint: score takes a language model or a numbers-to-words translate checkpoint");
        (c, _, e) = Run("score", "--checkpoint", Path.Combine(folder.Path, "none.safetensors"), "--text", "x");
        Assert.Equal(CliApp.Failure, c);
        AssertOneLineError(e, "does not exist");
    }
}
