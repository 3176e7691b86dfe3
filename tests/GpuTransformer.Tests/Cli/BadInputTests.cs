using System.Buffers.Binary;
using System.Text;
using GpuTransformer.Cli;

namespace GpuTransformer.Tests.Cli;

/// <summary>
/// Bad input as a new user types it: each gives one line <c>error: …</c> naming the problem and a
/// non-zero exit, before any long work. The <c>train</c> cases name a corpus that does not exist: an
/// error about the option (not about the corpus) shows the check came before the corpus was loaded.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class BadInputTests
{
    private const string NoCorpus = "/nonexistent/gt-corpus";

    [Theory]
    [InlineData(CliApp.UsageError, "The duration '300000000h' is longer than 365 days", "--time-limit", "300000000h")]
    [InlineData(CliApp.UsageError, "The duration '400.00:00:00' is longer than 365 days", "--time-limit", "400.00:00:00")]
    [InlineData(CliApp.UsageError, "Cannot read the duration '1e400'", "--time-limit", "1e400")]
    [InlineData(CliApp.UsageError, "Cannot read the duration '-5m'", "--time-limit", "-5m")]
    [InlineData(CliApp.UsageError, "--sample-tokens must be between 0 and 1000000, got -5.", "--steps", "3", "--sample-tokens", "-5")]
    [InlineData(CliApp.UsageError, "--steps must be between 1 and 1000000000000, got 0.", "--steps", "0")]
    [InlineData(CliApp.UsageError, "--steps must be between 1 and 1000000000000, got -2.", "--steps", "-2")]
    [InlineData(CliApp.UsageError, "--d-model must be between 1 and 65536, got 0.", "--d-model", "0")]
    [InlineData(CliApp.UsageError, "--heads must be between 1 and 1024, got -1.", "--heads", "-1")]
    [InlineData(CliApp.UsageError, "--layers must be between 1 and 1024, got 0.", "--layers", "0")]
    [InlineData(CliApp.UsageError, "--d-ff must be between 1 and 1048576, got 0.", "--d-ff", "0")]
    [InlineData(CliApp.UsageError, "--context must be between 1 and 1048576, got 0.", "--context", "0")]
    [InlineData(CliApp.UsageError, "--batch-size must be between 1 and 1048576, got 0.", "--batch-size", "0")]
    [InlineData(CliApp.UsageError, "--accumulate must be between 1 and 1048576, got -3.", "--accumulate", "-3")]
    [InlineData(CliApp.UsageError, "--lr must be in (0, 10], got 0.", "--lr", "0")]
    [InlineData(CliApp.UsageError, "--lr must be in (0, 10], got NaN.", "--lr", "NaN")]
    [InlineData(CliApp.UsageError, "--warmup must be between 0 and 1000000000000, got -1.", "--warmup", "-1")]
    [InlineData(CliApp.UsageError, "--min-lr must be between 0 and 10, got -0.1.", "--min-lr", "-0.1")]
    [InlineData(CliApp.UsageError, "--weight-decay must be between 0 and 10, got -1.", "--weight-decay", "-1")]
    [InlineData(CliApp.UsageError, "--clip must be between 0 and 1000000000, got -1.", "--clip", "-1")]
    [InlineData(CliApp.UsageError, "--dropout must be in [0, 1), got 1.", "--dropout", "1")]
    [InlineData(CliApp.UsageError, "--eval-every must be between 0 and 2147483647, got -1.", "--eval-every", "-1")]
    [InlineData(CliApp.UsageError, "--eval-windows must be between 0 and 2147483647, got -4.", "--eval-windows", "-4")]
    [InlineData(CliApp.UsageError, "--checkpoint-every must be between 0 and 2147483647, got -1.", "--checkpoint-every", "-1")]
    [InlineData(CliApp.UsageError, "--seed must be between 0 and 2147483647, got -7.", "--seed", "-7")]
    [InlineData(CliApp.UsageError, "--prompt must hold some text to continue", "--prompt", " ")]
    [InlineData(CliApp.UsageError, "Unknown preset 'huge'. Known presets: tiny, cpu, gpu.", "--preset", "huge")]
    [InlineData(CliApp.UsageError, "Unknown tokenizer", "--tokenizer", "letters")]
    [InlineData(CliApp.UsageError, "Unknown schedule 'linear'. Known: cosine, inverse-sqrt.", "--schedule", "linear")]
    [InlineData(CliApp.Failure, "d_model (30) must be divisible by nhead (4).", "--d-model", "30", "--heads", "4")]
    [InlineData(CliApp.Failure, "The minimum learning rate must be in [0, lr = 0.001], got 0.002.", "--lr", "0.001", "--min-lr", "0.002")]
    [InlineData(CliApp.Failure, "Warmup steps must be ≥ 1 for the inverse_sqrt schedule, got 0.", "--schedule", "inverse-sqrt", "--warmup", "0")]
    [InlineData(CliApp.Failure, "No checkpoint at '/nonexistent/run/checkpoint.safetensors'.", "--resume", "/nonexistent/run/checkpoint.safetensors")]
    public void A_bad_train_option_is_one_line_before_the_corpus_is_loaded(int code, string expected, params string[] options)
    {
        string[] preset = options.Contains("--preset") ? [] : ["--preset", "tiny"];
        var (exit, output, error) = CliRuns.Run(["train", .. preset, "--corpus", NoCorpus, .. options]);
        Assert.True(exit == code, $"exit {exit}: {error}{output}");
        CliRuns.AssertOneLineError(error, expected);
        Assert.DoesNotContain(NoCorpus, error);
        Assert.DoesNotContain("Run folder", output);
    }

    [Theory]
    [InlineData("--max-windows", "-3", "--max-windows must be between 1 and 2147483647, got -3.")]
    [InlineData("--max-windows", "0", "--max-windows must be between 1 and 2147483647, got 0.")]
    [InlineData("--batch-size", "0", "--batch-size must be between 1 and 1048576, got 0.")]
    public void A_bad_eval_option_is_one_line_before_the_checkpoint_is_read(string option, string value, string expected)
    {
        var (code, _, error) = CliRuns.Run("eval", "/nonexistent/run", option, value);
        Assert.Equal(CliApp.UsageError, code);
        CliRuns.AssertOneLineError(error, expected);
    }

    [Theory]
    [InlineData("--window", "0", "--window must be between 1 and 1048576, got 0.")]
    [InlineData("--stride", "-2", "--stride must be between 1 and 1048576, got -2.")]
    public void A_bad_score_option_is_one_line_before_the_checkpoint_is_read(string option, string value, string expected)
    {
        var (code, _, error) = CliRuns.Run("score", "--checkpoint", "/nonexistent/run", "--text", "a", option, value);
        Assert.Equal(CliApp.UsageError, code);
        CliRuns.AssertOneLineError(error, expected);
    }

    [Theory]
    [InlineData("eval")]
    [InlineData("generate")]
    public void A_checkpoint_with_a_duplicate_key_padded_with_NULs_names_the_key(string command)
    {
        using var folder = new TempFolder();
        var header = Encoding.UTF8.GetBytes("""{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""" + "\0\0\0\0\0");
        var bytes = new byte[8 + header.Length + 4];
        BinaryPrimitives.WriteInt64LittleEndian(bytes, header.Length);
        header.CopyTo(bytes, 8);
        var path = folder.WriteBytes("dup.safetensors", bytes);
        var (code, _, error) = command == "eval" ? CliRuns.Run("eval", path) : CliRuns.Run("generate", "--checkpoint", path);
        Assert.Equal(CliApp.Failure, code);
        CliRuns.AssertOneLineError(error, $"'{path}' has a malformed JSON header: key 'w' appears twice.");
    }
}
