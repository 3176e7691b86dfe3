using System.Runtime.CompilerServices;
using GpuTransformer.Training.Parity;

namespace GpuTransformer.Tests.Golden;

/// <summary>
/// Moving models between GpuTransformer and PyTorch (docs/pytorch-interop.md). Without torch:
/// a checkpoint written by <see cref="IModel.SaveStateDict"/>
/// holds exactly the names, shapes and order of scripts/parity/README.md (what
/// import_to_pytorch.py loads with strict names) and the metadata it reads, reloads bit for bit
/// (also under a prefix) and runs to the same outputs.
/// With torch in /usr/bin/python3 (or $GPUTRANSFORMER_PYTHON; skipped with the reason otherwise, as on CI): our fresh models load in
/// PyTorch's reference models with logits, loss and every gradient within
/// <see cref="ParityTolerance.Default"/> and re-export bit for bit; and PyTorch models
/// (a reference model, and an nn.Transformer wrapped with the translation tutorial's names)
/// exported by export_pytorch.py match here. Both models with configs unlike the goldens'
/// (d_model 24–32, 3–4 heads, padded batches).
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class PyTorchInteropTests(Devices devices, ITestOutputHelper output) : IDisposable
{
    private readonly TempFolder folder = new();

    private static readonly LanguageModelConfig Lm = new()
    {
        DModel = 24, NHead = 3, NumLayers = 2, DimFeedforward = 40, Dropout = 0.1f, Activation = "gelu_tanh",
        NormFirst = true, VocabularySize = 37, MaxSequenceLength = 16, TieWeights = true, PadId = 0,
    };

    private static readonly TransformerConfig Seq2Seq = new()
    {
        DModel = 32, NHead = 4, NumEncoderLayers = 2, NumDecoderLayers = 1, DimFeedforward = 48, Dropout = 0.1f, Activation = "gelu",
        SourceVocabularySize = 29, TargetVocabularySize = 31, MaxSequenceLength = 16, PadId = 0,
    };

    public void Dispose() => folder.Dispose();

    /// <summary>PoCL where present (fast), else the simulator: loading is host code, the run only needs to be deterministic.</summary>
    private string Backend => Devices.Available.Contains("opencl") ? "opencl" : "cpu";

    private ComputeDevice Device => devices.Get(Backend);

    private string PathOf(string name) => Path.Combine(folder.Path, name);

    [Fact]
    public void A_saved_checkpoint_has_the_names_PyTorch_loads_and_reloads_bit_for_bit()
    {
        foreach (var (original, configJson) in Models(seed: 5))
        {
            using var _ = original;
            var path = PathOf($"{original.Config.Kind}.safetensors");
            original.SaveStateDict(path);
            var file = SafeTensors.Read(path);
            Assert.Equal(original.Config.Kind, file.Metadata[StateDict.ModelKey]);
            Assert.Equal(configJson, file.Metadata[StateDict.ConfigKey]);
            var expected = ParitySpec.ExpectedParameters(original.Config.Kind, configJson);
            Assert.Equal(expected.Select(e => e.Name), file.Tensors.Keys);
            Assert.All(expected, e => Assert.Equal(e.Shape, file.Tensors[e.Name].Shape));
            Assert.All(file.Tensors.Values, t => Assert.Equal(SafeTensorType.F32, t.Type));

            using var reloaded = ModelParity.Load(Device, file);
            Assert.Equal(0, ModelParity.IgnoredTensors(reloaded, file));
            foreach (var (a, b) in original.Parameters().Zip(reloaded.Parameters()))
                Assert.Equal(a.Value.ToArray(), b.Value.ToArray());
            var batch = Batch(original.Config.Kind);
            var direct = ModelParity.Run(original, batch);
            var again = ModelParity.Run(reloaded, batch);
            Assert.Equal(direct.Logits, again.Logits);
            Assert.Equal(direct.Loss, again.Loss);

            // A PyTorch model wrapping ours keeps a prefix on every name.
            var prefixed = PathOf($"{original.Config.Kind}.prefixed.safetensors");
            original.SaveStateDict(prefixed, prefix: "model.core");
            using (var unwrapped = ModelParity.Load(Device, SafeTensors.Read(prefixed), "model.core"))
                Assert.Equal(direct.Logits, ModelParity.Run(unwrapped, batch).Logits);
            var error = Assert.Throws<InvalidDataException>(() => ModelParity.Load(Device, SafeTensors.Read(prefixed)));
            Assert.Contains("missing tensors", error.Message);
        }
    }

    [TorchFact]
    public void Our_checkpoints_load_in_PyTorch_with_the_same_outputs_and_export_back_unchanged()
    {
        foreach (var (model, _) in Models(seed: 11))
        {
            using var _ = model;
            var (checkpoint, batchPath, ours, theirs, back) =
                (PathOf("model.safetensors"), PathOf("batch.safetensors"), PathOf("ours.safetensors"), PathOf("torch.safetensors"), PathOf("back.safetensors"));
            model.SaveStateDict(checkpoint);
            var batch = Batch(model.Config.Kind);
            SafeTensors.Write(batchPath, batch.ToSafeTensors());
            var result = ModelParity.Run(model, batch);
            result.Save(ours);

            Python("import_to_pytorch.py", checkpoint, "--batch", batchPath, "--out", theirs, "--compare", ours, "--resave", back);
            AssertWithin(ParityComparison.Compare(result, SafeTensors.Read(theirs)), $"{model.Config.Kind}: GpuTransformer vs PyTorch");
            var exported = SafeTensors.Read(back);
            Assert.Equal(model.Parameters().Select(p => p.Name), exported.Tensors.Keys);
            foreach (var parameter in model.Parameters())
                Assert.Equal(parameter.Value.ToArray(), exported.Floats(parameter.Name));
        }
    }

    [TorchFact]
    public void PyTorch_models_exported_by_the_script_match_here()
    {
        var lmConfig = """{"d_model":32,"nhead":4,"num_layers":2,"dim_feedforward":48,"dropout":0.1,"activation":"gelu_tanh","layer_norm_eps":1e-5,"norm_first":false,"vocab_size":41,"max_seq_len":16,"tie_weights":false,"scale_embeddings":false,"pad_id":0}""";
        string[][] exports =
        [
            ["reference", "--kind", "language_model", "--config", lmConfig, "--seed", "4"],
            ["tutorial", "--seed", "2"],
        ];
        foreach (var command in exports)
        {
            var (checkpoint, batchPath, reference) = (PathOf("exported.safetensors"), PathOf("batch.safetensors"), PathOf("reference.safetensors"));
            Python("export_pytorch.py", [.. command, "--out", checkpoint, "--batch-out", batchPath, "--reference-out", reference]);
            var file = SafeTensors.Read(checkpoint);
            using var model = ModelParity.Load(Device, file);
            Assert.Equal(0, ModelParity.IgnoredTensors(model, file));
            var result = ModelParity.Run(model, ParityBatch.Read(batchPath, model.Config.Kind));
            AssertWithin(ParityComparison.Compare(result, SafeTensors.Read(reference)), $"{command[0]}: PyTorch export vs GpuTransformer");
        }
    }

    /// <summary>A language model and a Transformer with fresh weights from <paramref name="seed"/>, dropout off.</summary>
    private IEnumerable<(IModel Model, string ConfigJson)> Models(int seed)
    {
        yield return (new LanguageModel(Device, Lm, seed), Lm.ToJson());
        yield return (new Transformer(Device, Seq2Seq, seed), Seq2Seq.ToJson());
    }

    /// <summary>Padded batches of three rows (pad_id 0 on the right).</summary>
    private static ParityBatch Batch(string kind) => kind == StateDict.LanguageModelKind
        ? ParityBatch.Create(kind, new Dictionary<string, TokenIds>
        {
            ["ids"] = new(new[] { 5, 9, 2, 33, 7, 1, 4, 8, 3, 6, 0, 0, 21, 17, 12, 30, 0, 0 }, 3, 6),
            ["targets"] = new(new[] { 9, 2, 33, 7, 1, 11, 8, 3, 6, 0, 0, 0, 17, 12, 30, 36, 0, 0 }, 3, 6),
        })
        : ParityBatch.Create(kind, new Dictionary<string, TokenIds>
        {
            ["src"] = new(new[] { 3, 4, 5, 6, 7, 28, 9, 10, 11, 0, 0, 0, 12, 13, 14, 15, 0, 0 }, 3, 6),
            ["tgt_in"] = new(new[] { 1, 20, 21, 22, 30, 1, 23, 24, 0, 0, 1, 25, 0, 0, 0 }, 3, 5),
            ["tgt_out"] = new(new[] { 20, 21, 22, 30, 2, 23, 24, 2, 0, 0, 25, 2, 0, 0, 0 }, 3, 5),
        });

    private void AssertWithin(IReadOnlyList<TensorComparison> comparisons, string what)
    {
        var worst = comparisons.MaxBy(c => c.RelativeDifference)!;
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{what}: {comparisons.Count} tensors, worst max|Δ|/max|ref| {worst.RelativeDifference:0.00e+0} ({worst.Name}), logits {comparisons[0].RelativeDifference:0.00e+0}, loss {comparisons[1].RelativeDifference:0.00e+0}"));
        var outside = comparisons.Where(c => !c.Within).Select(c => c.Name).ToList();
        Assert.True(outside.Count == 0, $"{what}: outside tolerance: {string.Join(", ", outside)}");
    }

    /// <summary>Runs a script of scripts/parity with /usr/bin/python3 and asserts exit code 0.</summary>
    private void Python(string script, params string[] args)
    {
        var start = new ProcessStartInfo(TorchFactAttribute.Python) { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "scripts", "parity", script));
        foreach (var arg in args)
            start.ArgumentList.Add(arg);
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        Assert.True(process.WaitForExit(300_000), $"{script} did not finish in 5 minutes");
        output.WriteLine($"$ python3 {script} {string.Join(' ', args)}\n{stdout.Result}{stderr.Result}");
        Assert.True(process.ExitCode == 0, $"{script} exited with {process.ExitCode}: {stderr.Result}");
    }
}

/// <summary>
/// A fact that runs only where Debian's /usr/bin/python3 (or <c>$GPUTRANSFORMER_PYTHON</c>) can
/// import torch, skipped with the reason otherwise.
/// </summary>
public sealed class TorchFactAttribute : FactAttribute
{
    /// <summary>The interpreter: <c>$GPUTRANSFORMER_PYTHON</c>, else /usr/bin/python3 (the one with python3-torch on Debian).</summary>
    public static string Python => Environment.GetEnvironmentVariable("GPUTRANSFORMER_PYTHON") is { Length: > 0 } python ? python : "/usr/bin/python3";

    private static readonly Lazy<string?> Missing = new(FindMissing);

    public TorchFactAttribute([CallerFilePath] string? sourceFilePath = null, [CallerLineNumber] int sourceLineNumber = -1)
        : base(sourceFilePath, sourceLineNumber)
    {
        if (Missing.Value is { } reason)
            Skip = reason;
    }

    /// <summary>Null when torch is there; looks the package up without importing it (fast enough for test discovery).</summary>
    private static string? FindMissing()
    {
        if (!File.Exists(Python))
            return $"{Python} does not exist (PyTorch round trips need Debian's python3 with python3-torch).";
        try
        {
            var start = new ProcessStartInfo(Python, ["-c", "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)"])
            { RedirectStandardOutput = true, RedirectStandardError = true };
            using var process = Process.Start(start)!;
            if (!process.WaitForExit(30_000))
                return $"{Python} did not answer within 30 s.";
            return process.ExitCode == 0 ? null : $"{Python} has no torch (apt-get install python3-torch python3-numpy to run the PyTorch round trips).";
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return $"{Python} cannot be started: {e.Message}";
        }
    }
}
