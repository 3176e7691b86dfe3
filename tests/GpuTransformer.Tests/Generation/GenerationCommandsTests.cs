using GpuTransformer.Cli;
using GpuTransformer.Training.Generation;
using static GpuTransformer.Tests.Infrastructure.CliRuns;

namespace GpuTransformer.Tests.Generation;

/// <summary>
/// The generate, translate and attention commands in-process: a tiny translate run end to end
/// (train, report, save, translate --input, attention maps from the checkpoint), generate from
/// a saved language model, and bad inputs → one clear error line with the right exit code.
/// Runs on PoCL when present (fast), else the CPU simulator.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class GenerationCommandsTests
{
    [Fact]
    public void Translate_trains_reports_saves_translates_and_draws_attention_on_a_tiny_budget()
    {
        using var folder = new TempFolder();
        var run = Path.Combine(folder.Path, "tiny");
        var checkpoint = Path.Combine(run, Checkpoint.FileName);
        var (code, output, error) = Run(
            "translate", "--out", run, "--digits", "2", "--d-model", "16", "--heads", "2", "--layers", "1", "--d-ff", "32",
            "--batch-size", "16", "--steps", "12", "--eval-every", "6", "--held-out", "6", "--beam", "2", "--examples", "3", "--warmup", "2");
        Assert.Equal("", error);
        Assert.Equal(0, code);
        Assert.Contains("Task numbers-to-words", output);
        Assert.Contains("post-LN", output);
        Assert.Matches(@"step 6: held-out greedy exact match \d+\.\d %", output);
        Assert.Matches(@"step 6: train loss \d+\.\d+, validation loss", output);
        Assert.Matches(@"greedy\s*│\s*\d/6\s*│", output);
        Assert.Matches(@"beam 2\s*│\s*\d/6\s*│", output);
        Assert.Matches(@"  \d+ → .*  [✓✗]", output);
        Assert.Contains($"Checkpoint: {checkpoint}", output);
        Assert.Contains("Trained 12 steps; final evaluation and checkpoint done.", output);
        Assert.True(File.Exists(checkpoint));

        // --resume PATH continues the run in its folder; --steps counts the whole run.
        (code, output, error) = Run("translate", "--resume", run, "--steps", "14", "--batch-size", "16", "--warmup", "2", "--eval-every", "6", "--beam", "1", "--examples", "0", "--time-limit", "5m");
        Assert.Equal("", error);
        Assert.Equal(0, code);
        Assert.Contains($"Resuming {checkpoint} at step 12.", output);
        Assert.Contains("Trained 14 steps; final evaluation and checkpoint done.", output);
        Assert.Equal(14, Checkpoint.Read(run).Step);

        (code, _, error) = Run("translate", "--input", "42");
        Assert.Equal(CliApp.Failure, code);
        AssertOneLineError(error, "--input and --evaluate need --checkpoint");
        (code, _, error) = Run("translate", "--time-limit", "soon", "--steps", "1");
        Assert.NotEqual(0, code);
        Assert.Contains("Cannot read the duration 'soon'", error);

        (code, output, error) = Run("translate", "--checkpoint", checkpoint, "--input", "42", "7", "--beam", "1");
        Assert.Equal("", error);
        Assert.Equal(0, code);
        Assert.Matches(@"^42 → .*\n7 → .*", output);

        (code, _, error) = Run("translate", "--checkpoint", checkpoint, "--input", "123");
        Assert.Equal(CliApp.Failure, code);
        AssertOneLineError(error, "'123' has 3 digits; this task covers numbers of at most 2 digits.");

        var maps = Path.Combine(folder.Path, "maps");
        (code, output, error) = Run("attention", "--checkpoint", checkpoint, "--input", "42", "--target", "forty two", "--output", maps);
        Assert.Equal("", error);
        Assert.Equal(0, code);
        Assert.Contains("Wrote 9 PNG files", output); // encoder self, decoder self, cross: a grid + 2 heads each
        Fixtures.PngSize(Path.Combine(maps, "decoder-cross-layer0.png"));
        Fixtures.PngSize(Path.Combine(maps, "encoder-self-layer0-head1.png"));

        (code, _, error) = Run("attention", "--checkpoint", checkpoint, "--input", "42", "--target", "forty too");
        Assert.Equal(CliApp.Failure, code);
        AssertOneLineError(error, "'too' is not in the vocabulary");
        (code, _, error) = Run("attention", "--checkpoint", checkpoint, "--prompt", "hello");
        Assert.Equal(CliApp.Failure, code);
        AssertOneLineError(error, "--prompt is for language models");

        (code, _, error) = Run("generate", "--checkpoint", checkpoint);
        Assert.Equal(CliApp.Failure, code);
        AssertOneLineError(error, "holds a 'transformer' model, not a 'language_model'");
    }

    [Fact]
    public void Norm_first_option_builds_a_pre_LN_model()
    {
        using var folder = new TempFolder();
        var (code, output, error) = Run(
            "translate", "--out", Path.Combine(folder.Path, "pre"), "--norm-first", "--digits", "2", "--d-model", "8", "--heads", "2",
            "--layers", "1", "--d-ff", "8", "--batch-size", "4", "--steps", "2", "--held-out", "1", "--beam", "1", "--examples", "0");
        Assert.Equal("", error);
        Assert.Equal(0, code);
        Assert.Contains("pre-LN (norm_first)", output);
        Assert.DoesNotContain("beam ", output);
    }

    [Fact]
    public void Generate_samples_from_a_saved_language_model_reproducibly()
    {
        using var folder = new TempFolder();
        var checkpoint = Path.Combine(folder.Path, "lm.safetensors");
        var tokenizer = new ByteTokenizer();
        var config = new LanguageModelConfig
        {
            DModel = 16, NHead = 2, NumLayers = 1, DimFeedforward = 16, VocabularySize = tokenizer.VocabularySize, MaxSequenceLength = 16, PadId = tokenizer.Specials.Pad,
        };
        using (var device = ComputeDevice.Create("cpu"))
        using (var model = new LanguageModel(device, config, seed: 3))
            model.SaveStateDict(checkpoint, new Dictionary<string, string> { [ModelCheckpoint.TokenizerKey] = TokenizerFactory.ToJson(tokenizer) });

        var (code, output, error) = Run("generate", "--checkpoint", checkpoint, "--prompt", "ab", "--max-tokens", "5", "--seed", "9", "--top-k", "20", "--temperature", "0.8");
        Assert.Equal(0, code);
        Assert.StartsWith("ab", output);
        Assert.Matches(@"^\[\d tokens, (stopped at <eos>|max tokens), temperature 0\.8, top-k 20, top-p 1, seed 9, KV cache, [\d.]+ tokens/s on \w+\]", error);
        var (_, again, _) = Run("generate", "--checkpoint", checkpoint, "--prompt", "ab", "--max-tokens", "5", "--seed", "9", "--top-k", "20", "--temperature", "0.8");
        Assert.Equal(output, again);

        (code, output, _) = Run("generate", "--checkpoint", checkpoint, "--prompt-ids", "97", "98", "--max-tokens", "3", "--greedy");
        Assert.Equal(0, code);
        Assert.StartsWith("ab", output);

        // The whole-window path gives the cached path's greedy text; --profile writes its three files.
        var (uncachedCode, uncached, uncachedError) = Run(
            "generate", "--checkpoint", checkpoint, "--prompt-ids", "97", "98", "--max-tokens", "3", "--greedy", "--no-cache", "--warmup", "--profile", folder.Path);
        Assert.Equal(0, uncachedCode);
        Assert.Equal(output, uncached);
        Assert.Contains("no cache", uncachedError);
        Assert.Contains("Profile of ", uncachedError);
        foreach (var file in new[] { "profile.md", "profile.json", "profile.png" })
            Assert.True(File.Exists(Path.Combine(folder.Path, file)), file);

        (code, _, error) = Run("generate", "--checkpoint", checkpoint, "--prompt-ids", "97", "300");
        Assert.Equal(CliApp.Failure, code);
        AssertOneLineError(error, "Prompt id 300 at position 1 is outside the tokenizer's vocabulary of 259 ids.");

        (code, _, error) = Run("generate", "--checkpoint", checkpoint, "--prompt", "abcdefghijklmnopqrstuvwxyz", "--no-sliding-window", "--max-tokens", "4");
        Assert.Equal(CliApp.Failure, code);
        AssertOneLineError(error, "more than max_seq_len 16");

        // With the sliding window a prompt longer than max_seq_len loses its start: one warning line says how much
        // (26 byte tokens + the separator, 8 = ⌈16/2⌉ kept); one that fits, none.
        (code, output, error) = Run("generate", "--checkpoint", checkpoint, "--prompt", "abcdefghijklmnopqrstuvwxyz", "--max-tokens", "2", "--greedy");
        Assert.Equal(0, code);
        Assert.StartsWith("abcdefghijklmnopqrstuvwxyz", output);
        var warnings = error.Split('\n').Where(line => line.StartsWith("warning: ", StringComparison.Ordinal)).ToList();
        Assert.Equal(["warning: the prompt is 27 tokens, more than max_seq_len 16: its first 19 were dropped and the model continued its last 8 (--no-sliding-window refuses instead)."], warnings);
        (_, _, error) = Run("generate", "--checkpoint", checkpoint, "--prompt", "abcdefghijklmno", "--max-tokens", "2", "--greedy");
        Assert.DoesNotContain("warning", error);

        // The tokenizer can come from a file when the checkpoint has none; a different one is refused.
        var bare = Path.Combine(folder.Path, "bare.safetensors");
        using (var device = ComputeDevice.Create("cpu"))
        using (var model = new LanguageModel(device, config, seed: 3))
            model.SaveStateDict(bare);
        (code, _, error) = Run("generate", "--checkpoint", bare);
        Assert.Equal(CliApp.Failure, code);
        AssertOneLineError(error, "has no tokenizer in its metadata");
        var tokenizerFile = Path.Combine(folder.Path, "byte.json");
        TokenizerFactory.Save(tokenizer, tokenizerFile);
        (code, output, _) = Run("generate", "--checkpoint", bare, "--tokenizer", tokenizerFile, "--prompt", "x", "--max-tokens", "2");
        Assert.Equal(0, code);
        Assert.StartsWith("x", output);
        var words = Path.Combine(folder.Path, "words.json");
        TokenizerFactory.Save(WordTokenizer.Train(["a b c a b"], 1, 100), words);
        (code, _, error) = Run("generate", "--checkpoint", checkpoint, "--tokenizer", words);
        Assert.Equal(CliApp.Failure, code);
        AssertOneLineError(error, "The checkpoint was trained with tokenizer byte");
    }

    [Theory]
    [InlineData("generate --checkpoint {missing}", 1, "does not exist")]
    [InlineData("translate --checkpoint {missing} --input 12", 1, "No checkpoint at")]
    [InlineData("translate --checkpoint {missing} --evaluate", 1, "No checkpoint at")]
    [InlineData("translate --resume {missing}", 1, "No checkpoint at")]
    [InlineData("attention --checkpoint {missing} --prompt hi", 1, "does not exist")]
    [InlineData("generate", 2, "--checkpoint")]
    [InlineData("generate --checkpoint x --top-p 0", 2, "--top-p must be in (0, 1], got 0.")]
    [InlineData("generate --checkpoint x --top-p 1.5", 2, "--top-p must be in (0, 1]")]
    [InlineData("generate --checkpoint x --temperature -1", 2, "--temperature must be between 0 and 100, got -1.")]
    [InlineData("generate --checkpoint x --top-k -3", 2, "--top-k must be between 0")]
    [InlineData("generate --checkpoint x --max-tokens 0", 2, "--max-tokens must be between 1")]
    [InlineData("translate --beam 0", 2, "--beam must be between 1 and 64, got 0.")]
    [InlineData("translate --target-accuracy 1.5", 2, "--target-accuracy must be between 0 and 1, got 1.5.")]
    [InlineData("translate --digits 13", 2, "--digits must be between 1 and 12")]
    [InlineData("translate --d-model 30 --heads 4", 1, "d_model (30) must be divisible by nhead (4)")]
    public void Bad_inputs_are_one_line_errors_with_the_right_exit_code(string line, int exitCode, string expected)
    {
        var missing = Path.Combine(Path.GetTempPath(), "gt-no-such-dir", "model.safetensors");
        var (code, output, error) = Run(line.Replace("{missing}", missing, StringComparison.Ordinal).Split(' '));
        Assert.Equal(exitCode, code);
        Assert.Equal("", output);
        Assert.Contains(expected, error);
        Assert.StartsWith("error: ", error);
        Assert.DoesNotContain("   at ", error);
    }
}
