using System.Text.Json.Nodes;
using GpuTransformer.Cli;
using GpuTransformer.Training.Reporting;

namespace GpuTransformer.Tests.Training;

/// <summary><c>train</c> and <c>eval</c> in-process on the corpus fixture with a tiny model, on every backend present.</summary>
[Collection(DeviceCollection.Name)]
public sealed class TrainCommandTests
{
    /// <summary>A tiny byte model on the fixture; <paramref name="overrides"/> (option, value pairs) replace or add options.</summary>
    internal static string[] Tiny(string backend, string folder, params string[] overrides)
    {
        var options = new Dictionary<string, string>
        {
            ["--backend"] = backend, ["--corpus"] = Fixtures.SotuMini, ["--preset"] = "tiny",
            ["--d-model"] = "16", ["--heads"] = "2", ["--layers"] = "1", ["--d-ff"] = "32", ["--context"] = "16", ["--batch-size"] = "2",
            ["--steps"] = "6", ["--eval-every"] = "3", ["--eval-windows"] = "4", ["--sample-tokens"] = "12", ["--out"] = folder,
        };
        for (var i = 0; i < overrides.Length; i += 2)
            options[overrides[i]] = overrides[i + 1];
        return ["train", "--opencl-portable", .. options.SelectMany(o => new[] { o.Key, o.Value })];
    }

    internal static (int Code, string Out, string Error) Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = CliApp.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Train_writes_the_run_folder_and_eval_reads_its_checkpoint(string backend)
    {
        using var folder = new TempFolder();
        var (code, output, error) = Run(Tiny(backend, folder.Path));
        Assert.True(code == 0, error + output);
        Assert.Contains("Tokenizer: byte (vocabulary 259", output);
        Assert.Contains("Model: d_model 16, 2 heads, 1 layers, d_ff 32, context 16", output);
        Assert.Matches(@"Unigram baseline \(validation\): 3\.\d{3} nats/token, perplexity 2\d\.\d\d", output);
        Assert.Contains("Trained 6 steps; final evaluation and checkpoint done.", output);
        Assert.Matches(@"\[greedy\] The state of the Union is▸", output);
        Assert.Matches(@"\[sampled\] We must▸", output);
        Assert.Matches(@"Validation: loss \d+\.\d{4} nats/token, perplexity \d+\.\d\d — unigram baseline perplexity 2\d\.\d\d", output);
        Assert.Matches(@"Throughput: [\d,]+ tokens/s; 6 steps, 192 training tokens", output);

        foreach (var name in new[] { Checkpoint.FileName, "metrics.csv", "metrics.jsonl", "loss.png", "attention.png", "samples.txt", "tokenizer.json", "summary.json" })
            Assert.True(File.Exists(Path.Combine(folder.Path, name)), $"{name} is missing");
        Assert.True(Fixtures.PngSize(Path.Combine(folder.Path, "loss.png")).Width >= 600);
        Assert.True(Fixtures.PngSize(Path.Combine(folder.Path, "attention.png")).Width >= 260);
        var records = MetricsLogger.ReadJsonl(Path.Combine(folder.Path, "metrics.jsonl"));
        Assert.Equal(new long[] { 1, 2, 3, 4, 5, 6 }, records.Select(r => r.Step));
        Assert.Equal(2, records.Count(r => r.ValLoss is not null));
        Assert.Equal(7, File.ReadAllLines(Path.Combine(folder.Path, "metrics.csv")).Length);
        var checkpoint = Checkpoint.Read(folder.Path);
        Assert.Equal(6, checkpoint.Step);
        Assert.Equal("tiny", checkpoint.Metadata("preset"));

        var summary = JsonNode.Parse(File.ReadAllText(Path.Combine(folder.Path, "summary.json")))!;
        var valLoss = summary["val_loss"]!.GetValue<double>();
        Assert.Equal(records[^1].ValLoss!.Value, valLoss);

        // eval on the same windows gives the training's final validation loss.
        var (evalCode, evalOutput, evalError) = Run("eval", folder.Path, "--backend", backend, "--opencl-portable", "--max-windows", "4");
        Assert.True(evalCode == 0, evalError + evalOutput);
        Assert.Contains("(step 6,", evalOutput);
        Assert.Contains("Corpus: sotu-mini, valid split", evalOutput);
        Assert.Contains(string.Create(CultureInfo.InvariantCulture, $"valid loss {valLoss:F4} nats/token, perplexity {Math.Exp(valLoss):F2}"), evalOutput);
        Assert.Matches(@"unigram baseline: loss 3\.\d{4} nats/token", evalOutput);

        var (testCode, testOutput, testError) = Run("eval", Path.Combine(folder.Path, Checkpoint.FileName), "--backend", backend, "--opencl-portable", "--split", "test");
        Assert.True(testCode == 0, testError + testOutput);
        Assert.Matches(@"test loss \d+\.\d{4} nats/token, perplexity", testOutput);
        Assert.Matches(@"Scored [\d,]+ tokens in windows of 16", testOutput);

        var (mismatchCode, _, mismatchError) = Run("eval", folder.Path, "--backend", backend, "--opencl-portable", "--tokenizer", "word");
        Assert.Equal(CliApp.Failure, mismatchCode);
        Assert.StartsWith("error: The checkpoint was trained with tokenizer byte (vocabulary 259", mismatchError);
        // Another kind is refused before the corpus is loaded (here one that does not exist).
        (mismatchCode, _, mismatchError) = Run("eval", folder.Path, "--backend", backend, "--opencl-portable", "--tokenizer", "word", "--corpus", Path.Combine(folder.Path, "missing.txt"));
        Assert.Equal(CliApp.Failure, mismatchCode);
        Assert.StartsWith("error: The checkpoint was trained with tokenizer byte (vocabulary 259", mismatchError);
        Assert.Contains("but a word tokenizer was requested: a different kind.", mismatchError);
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void No_sample_tokens_means_no_samples_and_no_attention_picture(string backend)
    {
        using var folder = new TempFolder();
        var (code, output, error) = Run(Tiny(backend, folder.Path, "--steps", "2", "--eval-every", "0", "--sample-tokens", "0"));
        Assert.True(code == 0, error + output);
        Assert.Contains("Samples: none (--sample-tokens 0), so no attention picture either.", output);
        Assert.DoesNotContain("[greedy]", output);
        Assert.False(File.Exists(Path.Combine(folder.Path, "samples.txt")));
        Assert.False(File.Exists(Path.Combine(folder.Path, "attention.png")));
        Assert.True(File.Exists(Path.Combine(folder.Path, Checkpoint.FileName)));
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Resume_continues_the_run_and_refuses_conflicting_options(string backend)
    {
        using var folder = new TempFolder();
        var (code, output, error) = Run(Tiny(backend, folder.Path, "--steps", "4"));
        Assert.True(code == 0, error + output);

        var (conflictCode, _, conflictError) = Run("train", "--backend", backend, "--opencl-portable", "--resume", folder.Path, "--lr", "0.5", "--d-model", "16");
        Assert.Equal(CliApp.Failure, conflictCode);
        Assert.StartsWith("error: --resume continues the checkpoint's run, but these options differ from it: --lr 0.5 (checkpoint: 0.003)", conflictError);
        Assert.DoesNotContain("--d-model", conflictError);

        var (tokenizerCode, _, tokenizerError) = Run("train", "--backend", backend, "--opencl-portable", "--resume", folder.Path, "--tokenizer", "word");
        Assert.Equal(CliApp.Failure, tokenizerCode);
        Assert.StartsWith("error: The checkpoint was trained with tokenizer byte", tokenizerError);

        var (resumeCode, resumed, resumeError) = Run("train", "--backend", backend, "--opencl-portable", "--resume", folder.Path, "--steps", "7", "--sample-tokens", "4");
        Assert.True(resumeCode == 0, resumeError + resumed);
        Assert.Contains("Resuming from step 4", resumed);
        Assert.Contains("Trained 7 steps", resumed);
        var records = MetricsLogger.ReadJsonl(Path.Combine(folder.Path, "metrics.jsonl"));
        Assert.Equal(new long[] { 1, 2, 3, 4, 5, 6, 7 }, records.Select(r => r.Step));
        Assert.Equal(7, Checkpoint.Read(folder.Path).Step);
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void A_model_too_big_for_the_device_is_refused_with_the_estimate_before_allocating(string backend)
    {
        using var folder = new TempFolder();
        var (code, output, error) = Run(Tiny(backend, folder.Path, "--d-model", "16384", "--heads", "128", "--layers", "64", "--d-ff", "65536", "--batch-size", "64", "--context", "2048"));
        Assert.Equal(CliApp.Failure, code);
        Assert.Matches(@"^error: Training does not fit on \w+:0 .*: d_model 16384, 64 layers, vocabulary 259 at batch 64 × context 2048 needs about [\d.]+ (GiB|TiB) of device memory", error);
        Assert.Contains("but the device has", error);
        Assert.DoesNotContain("Run folder", output);
        Assert.False(File.Exists(Path.Combine(folder.Path, Checkpoint.FileName)));
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void The_gpu_preset_runs_a_few_steps_at_reduced_size_with_BPE(string backend)
    {
        using var folder = new TempFolder();
        var (code, output, error) = Run(
            "train", "--backend", backend, "--opencl-portable", "--corpus", Fixtures.SotuMini, "--preset", "gpu",
            "--d-model", "32", "--layers", "1", "--d-ff", "64", "--context", "16", "--batch-size", "2", "--steps", "2",
            "--eval-windows", "2", "--sample-tokens", "4", "--out", folder.Path);
        Assert.True(code == 0, error + output);
        Assert.Contains("Tokenizer: bpe-cl100k", output);
        Assert.Contains("Model: d_model 32, 8 heads, 1 layers, d_ff 64, context 16, dropout 0.1", output);
        Assert.Contains("preset gpu; 2 steps", output);
        Assert.Contains("Trained 2 steps", output);
        Assert.Equal("gpu", Checkpoint.Read(folder.Path).Metadata("preset"));
    }

    [Fact]
    public void Bad_options_are_one_line_errors()
    {
        var (code, _, error) = Run("train", "--preset", "huge");
        Assert.Equal(CliApp.UsageError, code);
        Assert.StartsWith("error: Unknown preset 'huge'. Known presets: tiny, cpu, gpu.", error);
        (code, _, error) = Run("train", "--time-limit", "soon");
        Assert.Equal(CliApp.UsageError, code);
        Assert.StartsWith("error: Cannot read the duration 'soon'", error);
        (code, _, error) = Run("train", "--schedule", "linear");
        Assert.Equal(CliApp.UsageError, code);
        Assert.StartsWith("error: Unknown schedule 'linear'. Known: cosine, inverse-sqrt.", error);
    }
}
