using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using GpuTransformer.Training.Optimization;

namespace GpuTransformer.Tests.Training;

/// <summary>The checkpoint file on every backend present: its contents, atomic writes, the tokenizer check; and the memory check before training.</summary>
[Collection(DeviceCollection.Name)]
public sealed class CheckpointTests(Devices devices)
{
    private static string TrainTo(ComputeDevice device, TempFolder folder, long steps)
    {
        var path = Path.Combine(folder.Path, Checkpoint.FileName);
        var (model, task) = TinyRun.Create(device);
        using (model)
        using (var trainer = new Trainer(task, TinyRun.Options(steps, path), checkpointMetadata: new Dictionary<string, string> { ["preset"] = "test" }))
            trainer.Run();
        return path;
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void A_checkpoint_holds_PyTorch_named_weights_moments_and_the_run_state(string backend)
    {
        var device = devices.Get(backend);
        using var folder = new TempFolder();
        var path = TrainTo(device, folder, 3);
        var checkpoint = Checkpoint.Read(folder.Path);
        var file = checkpoint.File;

        using var model = new LanguageModel(device, TinyRun.Config(0.1f));
        var names = model.Parameters().Select(p => p.Name).ToList();
        Assert.Contains("tok_embed.weight", names);
        Assert.Contains("layers.0.self_attn.in_proj_weight", names);
        var expected = names
            .Concat(names.Select(n => AdamWOptimizer.FirstMomentPrefix + n))
            .Concat(names.Select(n => AdamWOptimizer.SecondMomentPrefix + n));
        Assert.Equal(expected.Order(StringComparer.Ordinal), file.Tensors.Keys.Order(StringComparer.Ordinal));
        Assert.All(file.Tensors.Values, t => Assert.Equal(SafeTensorType.F32, t.Type));

        foreach (var key in new[]
        {
            StateDict.FormatKey, StateDict.FormatVersionKey, StateDict.ModelKey, StateDict.ConfigKey, Checkpoint.KindKey, Checkpoint.VersionKey,
            Checkpoint.StepKey, Checkpoint.TokensKey, Checkpoint.ElapsedKey, Checkpoint.OptimizerStepKey, Checkpoint.TrainingKey, Checkpoint.RandomStateKey,
            Checkpoint.DataStateKey, Checkpoint.TokenizerKey, Checkpoint.TokenizerFingerprintKey, Checkpoint.CorpusKey, Checkpoint.TaskKey, "preset",
        })
        {
            Assert.True(file.Metadata.ContainsKey(key), $"metadata '{key}' is missing");
        }
        Assert.Equal(3, checkpoint.Step);
        Assert.Equal(3, checkpoint.OptimizerStep);
        Assert.Equal(3L * TinyRun.Batch * TinyRun.Context, checkpoint.Tokens);
        Assert.Equal(TinyRun.Config(0.1f), checkpoint.LanguageModelConfig());
        Assert.Equal(TokenizerFactory.Fingerprint(TinyRun.Tokens.Tokenizer), checkpoint.Metadata(Checkpoint.TokenizerFingerprintKey));
        Assert.True(TokenizerFactory.AreSame(TinyRun.Tokens.Tokenizer, checkpoint.Tokenizer()));
        Assert.Equal("sotu-mini", checkpoint.Corpus().Name);
        Assert.Equal(TinyRun.Tokens.Train.Length, checkpoint.Corpus().TrainTokens);
        Assert.Equal(new LanguageModelTaskSettings(TinyRun.Batch, TinyRun.Context, 11, 4), LanguageModelTaskSettings.Read(checkpoint));
        var state = checkpoint.State();
        Assert.False(file.Metadata.ContainsKey(Checkpoint.MetricsKey), "the metrics history lives in the run's log, not in the checkpoint");
        Assert.Contains("\"step\":\"3\"", state.DataState); // the batcher drew 3 batches

        // The weights load as a plain state dict, the optimizer tensors ignored.
        StateDict.Load(model, file, new StateDictLoadOptions { IgnoreExtraTensors = true });
        Assert.Equal(file.Floats("norm.weight"), model.Norm.Weight.Value.ToArray());
        Assert.Equal(path, checkpoint.Path);
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void A_failed_write_leaves_the_previous_checkpoint_intact(string backend)
    {
        var device = devices.Get(backend);
        Assert.SkipUnless(OperatingSystem.IsLinux(), "the write failure is provoked with Linux's RLIMIT_FSIZE");
        using var folder = new TempFolder();
        var path = TrainTo(device, folder, 2);
        var before = File.ReadAllBytes(path);
        var (model, task) = TinyRun.Create(device);
        using var modelScope = model;
        using var trainer = new Trainer(task, TinyRun.Options(4, path));
        trainer.Run();
        File.WriteAllBytes(path, before); // the previous checkpoint again; the trainer now holds step 4

        // Files may not grow past 4 KiB during the save: the temporary file's write fails midway (EFBIG).
        var exception = FileSizeLimit.Run(4096, () => trainer.SaveCheckpoint(path));
        Assert.IsAssignableFrom<IOException>(exception);
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Equal(2, Checkpoint.Read(path).Step);
        Assert.Equal([Checkpoint.FileName], Directory.GetFiles(folder.Path).Select(Path.GetFileName));

        trainer.SaveCheckpoint(path);
        Assert.Equal(4, Checkpoint.Read(path).Step);
    }

    /// <summary>
    /// A <c>train</c> process (tiny model, a checkpoint every 2 of 6 steps) is SIGKILLed while it
    /// writes the step-4 checkpoint: <see cref="SafeTensors.TestPauseVariable"/> holds the
    /// writer halfway through its temporary file. The step-2 checkpoint is still there and
    /// loads, the half-written temporary file is ignored by readers and deleted by the next
    /// save, and <c>--resume</c> ends with the same weights and moments, bit for bit, as a run
    /// that was never interrupted.
    /// </summary>
    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void A_training_process_killed_while_writing_a_checkpoint_resumes_exactly_from_the_previous_one(string backend)
    {
        using var killed = new TempFolder();
        using var whole = new TempFolder();
        string[] Train(string folder) => TrainCommandTests.Tiny(backend, folder, "--checkpoint-every", "2", "--sample-tokens", "4");
        var signal = Path.Combine(killed.Path, "paused-in-write");
        var checkpointPath = Path.Combine(killed.Path, Checkpoint.FileName);

        using (var process = StartCli(Train(killed.Path), (SafeTensors.TestPauseVariable, signal)))
        {
            var lines = new ConcurrentQueue<string?>();
            process.OutputDataReceived += (_, e) => lines.Enqueue(e.Data);
            process.ErrorDataReceived += (_, e) => lines.Enqueue(e.Data);
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            var clock = Stopwatch.StartNew();
            while (!File.Exists(signal) && !process.HasExited && clock.Elapsed < TimeSpan.FromMinutes(5))
                Thread.Sleep(50);
            Assert.True(File.Exists(signal), $"the training process never paused in a checkpoint write (exited: {process.HasExited}):{Environment.NewLine}{string.Join(Environment.NewLine, lines)}");
            process.Kill(); // SIGKILL on Linux and macOS
            process.WaitForExit();
        }

        // The step-4 save died halfway: its temporary file is partial, the step-2 checkpoint intact.
        var temporary = File.ReadAllText(signal);
        File.Delete(signal);
        Assert.True(File.Exists(temporary), $"{temporary} is gone");
        Assert.InRange(new FileInfo(temporary).Length, 1, new FileInfo(checkpointPath).Length - 1);
        var previous = Checkpoint.Read(killed.Path);
        Assert.Equal(2, previous.Step);

        var (code, output, error) = TrainCommandTests.Run("train", "--backend", backend, "--opencl-portable", "--resume", killed.Path, "--sample-tokens", "4");
        Assert.True(code == 0, error + output);
        Assert.Contains("Resuming from step 2", output);
        Assert.DoesNotContain(Directory.GetFiles(killed.Path), f => f.EndsWith(".tmp", StringComparison.Ordinal));

        (code, output, error) = TrainCommandTests.Run(Train(whole.Path));
        Assert.True(code == 0, error + output);
        var resumed = Checkpoint.Read(killed.Path);
        var uninterrupted = Checkpoint.Read(whole.Path);
        Assert.Equal(6, resumed.Step);
        Assert.Equal(6, uninterrupted.Step);
        Assert.Equal(uninterrupted.File.Tensors.Keys.Order(StringComparer.Ordinal), resumed.File.Tensors.Keys.Order(StringComparer.Ordinal));
        foreach (var (name, tensor) in uninterrupted.File.Tensors)
            Assert.True(tensor.Data.AsSpan().SequenceEqual(resumed.File.Tensors[name].Data), $"{name} differs after the resume");
    }

    /// <summary>The command-line program as a child process (its apphost beside the tests), output redirected.</summary>
    private static Process StartCli(string[] arguments, params (string Name, string Value)[] environment)
    {
        var apphost = Path.Combine(AppContext.BaseDirectory, OperatingSystem.IsWindows() ? "gpu-transformer.exe" : "gpu-transformer");
        var start = File.Exists(apphost)
            ? new ProcessStartInfo(apphost, arguments)
            : new ProcessStartInfo("dotnet", [Path.Combine(AppContext.BaseDirectory, "gpu-transformer.dll"), .. arguments]);
        start.RedirectStandardOutput = true;
        start.RedirectStandardError = true;
        foreach (var (name, value) in environment)
            start.Environment[name] = value;
        return Process.Start(start)!;
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Loading_with_another_tokenizer_than_requested_is_an_error_naming_both(string backend)
    {
        var device = devices.Get(backend);
        using var folder = new TempFolder();
        TrainTo(device, folder, 1);
        var checkpoint = Checkpoint.Read(folder.Path);
        Assert.True(TokenizerFactory.AreSame(new ByteTokenizer(), checkpoint.Tokenizer(new ByteTokenizer())));
        var word = WordTokenizer.Train(["the state of the union is strong", "the union"]);
        var e = Assert.Throws<TokenizerMismatchException>(() => checkpoint.Tokenizer(word));
        Assert.Contains("trained with tokenizer byte (vocabulary 259", e.Message);
        Assert.Contains("but word (vocabulary", e.Message);
        Assert.Contains("a different kind", e.Message);
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Reading_something_that_is_not_a_checkpoint_is_a_clear_error(string backend)
    {
        var device = devices.Get(backend);
        using var folder = new TempFolder();
        using var model = new LanguageModel(device, TinyRun.Config(0));
        var stateDict = Path.Combine(folder.Path, "weights.safetensors");
        model.SaveStateDict(stateDict);
        var e = Assert.Throws<InvalidDataException>(() => Checkpoint.Read(stateDict));
        Assert.Contains("is not a GpuTransformer training checkpoint", e.Message);
        var missing = Assert.Throws<FileNotFoundException>(() => Checkpoint.Read(folder.Path));
        Assert.Contains($"No checkpoint at '{Path.Combine(folder.Path, Checkpoint.FileName)}'", missing.Message);
    }

    [Fact]
    public void A_model_that_does_not_fit_is_refused_before_allocation_naming_the_estimate_and_the_memory()
    {
        var gpu = new DeviceDescription(Backend.Cuda, 0, "Test GPU", DeviceKind.Gpu, 8L << 30, 1024, 32, 80, 48 << 10, "", false);
        var tuning = KernelTuning.For(Backend.Cuda, gpu);
        var big = new LanguageModelConfig { DModel = 4096, NHead = 32, NumLayers = 32, DimFeedforward = 16384, VocabularySize = 50_000, MaxSequenceLength = 1024 };
        var estimate = MemoryEstimate.For(big, 8, 1024);
        var e = Assert.Throws<InsufficientDeviceMemoryException>(() => DeviceMemory.RequireFits(big, 8, 1024, gpu, tuning));
        Assert.StartsWith("Training does not fit on cuda:0 Test GPU: d_model 4096, 32 layers, vocabulary 50,000 at batch 8 × context 1024 needs about ", e.Message);
        Assert.Contains($"needs about {DeviceMemory.Format(DeviceMemory.Estimate(big, 8, 1024, tuning))} of device memory", e.Message);
        Assert.Contains($"parameters {DeviceMemory.Format(estimate.Parameters)}", e.Message);
        Assert.Contains($"AdamW moments {DeviceMemory.Format(estimate.OptimizerState)}", e.Message);
        Assert.Contains("but the device has 8.0 GiB (90 % usable)", e.Message);
        Assert.Contains("Reduce --batch-size or --context", e.Message);

        var small = TinyRun.Config(0.1f);
        Assert.Equal(DeviceMemory.Estimate(small, 2, 8, tuning), DeviceMemory.RequireFits(small, 2, 8, gpu, tuning));
        Assert.True(DeviceMemory.Estimate(small, 2, 8, tuning) > MemoryEstimate.For(small, 2, 8).Total);
    }

    /// <summary>
    /// A device whose tuning trains attention unfused at this context (PoCL: T ≤ 512) holds P and dS
    /// [B, H, T, T] per layer instead of the fused kernels' log-sum-exp and row dots [B, H, T]; the
    /// pre-training check counts them (it did not: 16 MiB per layer at the cpu preset's B 16, H 8, T 128).
    /// </summary>
    [Fact]
    public void The_memory_check_counts_the_unfused_attention_buffers_of_a_device_that_trains_unfused()
    {
        var gpu = new DeviceDescription(Backend.Cuda, 0, "Test GPU", DeviceKind.Gpu, 8L << 30, 1024, 32, 80, 48 << 10, "", false);
        var pocl = new DeviceDescription(Backend.OpenCL, 0, "Test PoCL", DeviceKind.Cpu, 8L << 30, 4096, 64, 2, 256 << 10, "", false);
        var (fused, unfused) = (KernelTuning.For(Backend.Cuda, gpu), KernelTuning.For(Backend.OpenCL, pocl));
        Assert.Equal(0, fused.UnfusedAttentionMaxLength);
        Assert.True(unfused.UnfusedAttentionMaxLength >= 128, "PoCL's tuning trains attention unfused at T 128");
        var config = new LanguageModelConfig { DModel = 256, NHead = 8, NumLayers = 4, DimFeedforward = 1024, VocabularySize = 8192, MaxSequenceLength = 128 };
        var (b, h, t) = (16L, 8L, 128L);

        var pAndDs = config.NumLayers * 2 * b * h * t * t * sizeof(float);
        var lseAndRowDots = config.NumLayers * 2 * b * h * t * sizeof(float);
        Assert.Equal(pAndDs - lseAndRowDots, DeviceMemory.Estimate(config, 16, 128, unfused) - DeviceMemory.Estimate(config, 16, 128, fused));
        Assert.Equal(DeviceMemory.Estimate(config, 16, 128, unfused), DeviceMemory.RequireFits(config, 16, 128, pocl, unfused));

        // Beyond the tuning's length both train fused.
        var longer = config with { MaxSequenceLength = 1024 };
        Assert.Equal(DeviceMemory.Estimate(longer, 2, 1024, fused), DeviceMemory.Estimate(longer, 2, 1024, unfused));
    }

    /// <summary>Runs an action while the process may not grow any file past a size (RLIMIT_FSIZE, SIGXFSZ ignored); returns what it threw.</summary>
    private static class FileSizeLimit
    {
        private const int RlimitFsize = 1;
        private const int Sigxfsz = 25;

        [StructLayout(LayoutKind.Sequential)]
        private struct RLimit
        {
            public ulong Current;
            public ulong Maximum;
        }

        public static Exception? Run(ulong bytes, Action action)
        {
            Check(GetLimit(RlimitFsize, out var saved));
            var previousHandler = Signal(Sigxfsz, 1 /* SIG_IGN */);
            try
            {
                var limited = saved with { Current = bytes };
                Check(SetLimit(RlimitFsize, in limited));
                try
                {
                    action();
                    return null;
                }
                catch (Exception e) when (e is IOException)
                {
                    return e;
                }
                finally
                {
                    Check(SetLimit(RlimitFsize, in saved));
                }
            }
            finally
            {
                Signal(Sigxfsz, previousHandler);
            }
        }

        private static void Check(int result) => Assert.True(result == 0, $"rlimit call failed: errno {Marshal.GetLastPInvokeError()}");

        [DllImport("libc", EntryPoint = "getrlimit", SetLastError = true)]
        private static extern int GetLimit(int resource, out RLimit limit);

        [DllImport("libc", EntryPoint = "setrlimit", SetLastError = true)]
        private static extern int SetLimit(int resource, in RLimit limit);

        [DllImport("libc", EntryPoint = "signal")]
        private static extern nint Signal(int signal, nint handler);
    }
}
