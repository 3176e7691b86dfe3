using System.Runtime.InteropServices;
using GpuTransformer.Training.Optimization;
using GpuTransformer.Training.Reporting;

namespace GpuTransformer.Tests.Training;

/// <summary>
/// Loading a checkpoint checks its values, not only its format: a checkpoint is written by a short
/// run, one tensor or metadata entry is corrupted, and the load must fail with a message naming it.
/// Also: older checkpoints holding the metrics history still load, and the history comes from the log.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class CheckpointValueTests(Devices devices)
{
    private const string Weight = "norm.weight";
    private const string SecondMoment = AdamWOptimizer.SecondMomentPrefix + Weight;
    private const string FirstMoment = AdamWOptimizer.FirstMomentPrefix + Weight;

    private string Train(TempFolder folder, long steps = 2)
    {
        var device = devices.Get(CliRuns.Backend);
        var path = Path.Combine(folder.Path, Checkpoint.FileName);
        var (model, task) = TinyRun.Create(device);
        using (model)
        using (var trainer = new Trainer(task, TinyRun.Options(steps, path)))
            trainer.Run();
        return path;
    }

    /// <summary>Rewrites <paramref name="path"/> with <paramref name="tensor"/> changed and <paramref name="metadata"/> entries replaced (null: removed).</summary>
    private static void Rewrite(string path, Func<SafeTensor, SafeTensor>? tensor = null, IReadOnlyDictionary<string, string?>? metadata = null)
    {
        var file = SafeTensors.Read(path);
        var meta = file.Metadata.ToDictionary(StringComparer.Ordinal);
        foreach (var (key, value) in metadata ?? new Dictionary<string, string?>())
        {
            if (value is null)
                meta.Remove(key);
            else
                meta[key] = value;
        }
        SafeTensors.Write(path, file.Tensors.Values.Select(t => tensor?.Invoke(t) ?? t).ToList(), meta);
    }

    private static SafeTensor Set(SafeTensor t, string name, int index, float value)
    {
        if (t.Name != name)
            return t;
        var values = t.ToFloats();
        values[index] = value;
        return SafeTensor.FromFloats(t.Name, t.Shape, values);
    }

    public static TheoryData<string, string> TensorCases => new()
    {
        { "nan-weight", $"tensor '{Weight}' holds a non-finite value, NaN at index 1." },
        { "infinite-moment", $"tensor '{FirstMoment}' holds a non-finite value, Infinity at index 0." },
        { "negative-second-moment", $"tensor '{SecondMoment}' holds a negative second moment, -0.5 at index 2." },
        { "f64-beyond-float", $"tensor '{Weight}' holds a value beyond float's range, 1E+300 at index 3." },
    };

    [Theory]
    [MemberData(nameof(TensorCases))]
    public void A_bad_tensor_value_is_refused_naming_the_tensor(string corruption, string expected)
    {
        using var folder = new TempFolder();
        var path = Train(folder);
        Rewrite(path, t => corruption switch
        {
            "nan-weight" => Set(t, Weight, 1, float.NaN),
            "infinite-moment" => Set(t, FirstMoment, 0, float.PositiveInfinity),
            "negative-second-moment" => Set(t, SecondMoment, 2, -0.5f),
            "f64-beyond-float" when t.Name == Weight => new SafeTensor(t.Name, SafeTensorType.F64, t.Shape,
                MemoryMarshal.AsBytes(t.ToDoubles().Select((v, i) => i == 3 ? 1e300 : v).ToArray().AsSpan()).ToArray()),
            _ => t,
        });
        var error = Assert.Throws<InvalidDataException>(() => Checkpoint.Read(path));
        Assert.Equal($"Checkpoint '{path}': {expected}", error.Message);
    }

    [Theory]
    [InlineData(Checkpoint.StepKey, "-3", "has a negative 'step': -3.")]
    [InlineData(Checkpoint.TokensKey, "-1", "has a negative 'tokens': -1.")]
    [InlineData(Checkpoint.OptimizerStepKey, "-2", "has a negative 'optimizer_step': -2.")]
    [InlineData(Checkpoint.StepKey, "three", "has a malformed 'step': 'three'.")]
    [InlineData(Checkpoint.ElapsedKey, "soon", "has a malformed 'elapsed_s': 'soon' is not a finite number of seconds ≥ 0.")]
    [InlineData(Checkpoint.ElapsedKey, "NaN", "has a malformed 'elapsed_s': 'NaN' is not a finite number of seconds ≥ 0.")]
    [InlineData(Checkpoint.ElapsedKey, "-4.5", "has a malformed 'elapsed_s': '-4.5' is not a finite number of seconds ≥ 0.")]
    public void A_bad_counter_is_refused_naming_the_key(string key, string value, string expected)
    {
        using var folder = new TempFolder();
        var path = Train(folder);
        Rewrite(path, metadata: new Dictionary<string, string?> { [key] = value });
        var error = Assert.Throws<InvalidDataException>(() => Checkpoint.Read(path));
        Assert.Equal($"Checkpoint '{path}' {expected}", error.Message);
    }

    [Fact]
    public void A_tokenizer_that_does_not_match_its_fingerprint_is_refused()
    {
        using var folder = new TempFolder();
        var path = Train(folder);
        Rewrite(path, metadata: new Dictionary<string, string?> { [Checkpoint.TokenizerFingerprintKey] = new string('0', 64) });
        var checkpoint = Checkpoint.Read(path);
        var error = Assert.Throws<InvalidDataException>(() => checkpoint.Tokenizer());
        Assert.StartsWith($"Checkpoint '{path}' has a 'tokenizer' whose fingerprint ", error.Message);
        Assert.EndsWith("is not the stored 'tokenizer_fingerprint' 000000000000…: the file was damaged or edited.", error.Message);
        Assert.Throws<InvalidDataException>(() => checkpoint.Tokenizer(null));

        // eval reads it the same way: one line, exit 1.
        var (code, _, stderr) = CliRuns.Run("eval", path);
        Assert.Equal(GpuTransformer.Cli.CliApp.Failure, code);
        CliRuns.AssertOneLineError(stderr, "whose fingerprint");
    }

    [Fact]
    public void An_old_checkpoint_with_the_metrics_history_loads_and_resumes_with_the_log()
    {
        using var folder = new TempFolder();
        var path = Train(folder, steps: 3);
        Assert.False(Checkpoint.Read(path).File.Metadata.ContainsKey(Checkpoint.MetricsKey));
        var header = new FileInfo(path).Length;
        Rewrite(path, metadata: new Dictionary<string, string?> { [Checkpoint.MetricsKey] = "{\"step\":1,\"tokens\":16,\"loss\":5.5}\nnot json at all" });
        Assert.True(new FileInfo(path).Length > header);

        var checkpoint = Checkpoint.Read(path);
        var device = devices.Get(CliRuns.Backend);
        var (model, task) = TinyRun.Create(device);
        using var scope = model;
        using var trainer = new Trainer(task, TinyRun.Options(4));
        var log = new List<MetricsRecord> { new(1, 16, 5.0, 1e-3, 1, 0, 0), new(2, 32, 4.0, 1e-3, 1, 0, 0, 3.9, Math.Exp(3.9)), new(3, 48, 3.5, 1e-3, 1, 0, 0), new(4, 64, 9, 9, 9, 0, 0) };
        trainer.Restore(checkpoint, log);
        Assert.Equal(3, trainer.Step);
        Assert.Equal(new long[] { 1, 2, 3 }, trainer.Metrics.Select(r => r.Step));
        Assert.Equal(3.9, trainer.LastValidation!.Value.Loss);
        trainer.Run();
        Assert.Equal(new long[] { 1, 2, 3, 4 }, trainer.Metrics.Select(r => r.Step));
        Assert.NotEqual(9, trainer.Metrics[3].Loss);
    }

    [Fact]
    public void The_checkpoint_does_not_grow_with_the_steps()
    {
        using var short1 = new TempFolder();
        using var long1 = new TempFolder();
        var a = new FileInfo(Train(short1, steps: 1)).Length;
        var b = new FileInfo(Train(long1, steps: 6)).Length;
        // Only the counters' digits may differ (step, tokens, elapsed time, data position).
        Assert.InRange(b - a, -16, 16);
    }
}
