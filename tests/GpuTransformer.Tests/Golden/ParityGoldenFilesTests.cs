using System.Text.Json;
using System.Text.Json.Nodes;

namespace GpuTransformer.Tests.Golden;

/// <summary>
/// The parity golden files (tests/golden/parity, made by scripts/parity/make_parity_golden.py)
/// hold exactly the parameters that scripts/parity/README.md specifies for their model kind and
/// configuration, a gradient for each, the batch and the outputs; their configs use exactly the
/// JSON names of <see cref="TransformerConfig"/> / <see cref="LanguageModelConfig"/>; their
/// weights load through <see cref="StateDict"/>. Checks the files and the specification, not
/// the models.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class ParityGoldenFilesTests(Devices devices)
{
    private static readonly string[] TransformerBatch = ["src", "tgt_in", "tgt_out"];
    private static readonly string[] LanguageModelBatch = ["ids", "targets"];
    private static readonly string[] Outputs = ["logits", "loss", "losses"];
    private static readonly string[] MetadataKeys =
        ["case", "generator", "torch", "model", "config", "weights", "math", "outputs", "lr", "beta1", "beta2", "eps", "weight_decay", "steps", "decay_rule"];

    private const int Steps = 10;

    public static TheoryData<string> Files
    {
        get
        {
            var data = new TheoryData<string>();
            foreach (var name in ParitySpec.Cases())
                data.Add(name);
            return data;
        }
    }

    [Fact]
    public void README_lists_the_files_present_and_the_cases_cover_every_variant_of_both_models()
    {
        var listed = ParitySpec.Cases().Order(StringComparer.Ordinal).ToList();
        var present = Directory.GetFiles(ParitySpec.GoldenDirectory, "*.safetensors")
            .Select(f => Path.GetFileNameWithoutExtension(f)!).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(listed, present);
        var total = Directory.GetFiles(ParitySpec.GoldenDirectory).Sum(f => new FileInfo(f).Length);
        Assert.True(total < 3_000_000, $"Parity golden data holds {total} bytes; keep it under 3 MB.");

        var cases = listed.Select(ParitySpec.Load)
            .Select(file => (File: file, Config: JsonNode.Parse(file.Metadata[StateDict.ConfigKey])!.AsObject()))
            .ToList();
        foreach (var kind in new[] { StateDict.TransformerKind, StateDict.LanguageModelKind })
        {
            var ofKind = cases.Where(c => StateDict.ModelKind(c.File) == kind).ToList();
            var batch = kind == StateDict.TransformerKind ? TransformerBatch : LanguageModelBatch;
            Assert.Contains(ofKind, c => c.Config["norm_first"]!.GetValue<bool>());
            Assert.Contains(ofKind, c => !c.Config["norm_first"]!.GetValue<bool>());
            Assert.Contains(ofKind, c => c.Config["activation"]!.GetValue<string>() == "relu");
            Assert.Contains(ofKind, c => c.Config["activation"]!.GetValue<string>() == "gelu");
            Assert.Contains(ofKind, c => c.File.Ints(batch[0]).Contains(c.Config["pad_id"]!.GetValue<int>()));
            Assert.Contains(ofKind, c => !c.File.Ints(batch[0]).Contains(c.Config["pad_id"]!.GetValue<int>()));
            var sharing = kind == StateDict.TransformerKind ? "share_embeddings" : "tie_weights";
            Assert.Contains(ofKind, c => c.Config[sharing]!.GetValue<bool>());
            Assert.Contains(ofKind, c => !c.Config[sharing]!.GetValue<bool>());
        }
    }

    [Theory]
    [MemberData(nameof(Files))]
    public void File_holds_exactly_the_documented_parameters_a_gradient_for_each_the_batch_and_the_outputs(string name)
    {
        var file = ParitySpec.Load(name);
        foreach (var key in MetadataKeys)
            Assert.True(file.Metadata.ContainsKey(key), $"{name}: metadata lacks '{key}'.");
        Assert.Equal(name, file.Metadata["case"]);
        Assert.Contains("float64", file.Metadata["math"], StringComparison.Ordinal);
        Assert.Equal(Steps.ToString(CultureInfo.InvariantCulture), file.Metadata["steps"]);
        foreach (var key in new[] { "lr", "beta1", "beta2", "eps", "weight_decay" })
            Assert.True(double.TryParse(file.Metadata[key], NumberStyles.Float, CultureInfo.InvariantCulture, out _), $"{name}: {key} = '{file.Metadata[key]}'.");

        var kind = StateDict.ModelKind(file);
        var expected = ParitySpec.ExpectedParameters(kind, file.Metadata[StateDict.ConfigKey]);
        var transformer = kind == StateDict.TransformerKind;
        var batch = transformer ? TransformerBatch : LanguageModelBatch;
        var parameters = file.Tensors.Keys
            .Where(k => !k.StartsWith("grad.", StringComparison.Ordinal) && !batch.Contains(k) && !Outputs.Contains(k))
            .ToHashSet(StringComparer.Ordinal);
        var names = expected.Select(e => e.Name).ToHashSet(StringComparer.Ordinal);
        Assert.True(names.SetEquals(parameters),
            $"{name}: README lists but file lacks [{string.Join(", ", names.Except(parameters))}]; file has but README lacks [{string.Join(", ", parameters.Except(names))}].");
        var gradients = file.Tensors.Keys.Where(k => k.StartsWith("grad.", StringComparison.Ordinal)).Select(k => k["grad.".Length..]);
        Assert.True(names.SetEquals(gradients), $"{name}: the grad.* tensors are not exactly one per parameter.");
        foreach (var entry in expected)
        {
            AssertFloats(file.Get(entry.Name, entry.Shape), name);
            AssertFloats(file.Get("grad." + entry.Name, entry.Shape), name);
        }

        int batchSize, length, vocabulary;
        if (transformer)
        {
            var config = StateDict.ReadTransformerConfig(file);
            var src = file.Get("src");
            var tgtIn = file.Get("tgt_in");
            (batchSize, length, vocabulary) = (tgtIn.Shape[0], tgtIn.Shape[1], config.TargetVocabularySize);
            Assert.Equal(batchSize, src.Shape[0]);
            Assert.True(src.Shape[1] <= config.MaxSequenceLength && length <= config.MaxSequenceLength, $"{name}: longer than max_seq_len.");
            AssertIds(src, [batchSize, src.Shape[1]], config.SourceVocabularySize, name);
            AssertIds(tgtIn, [batchSize, length], config.TargetVocabularySize, name);
            AssertIds(file.Get("tgt_out"), [batchSize, length], config.TargetVocabularySize, name);
        }
        else
        {
            var config = StateDict.ReadLanguageModelConfig(file);
            var ids = file.Get("ids");
            (batchSize, length, vocabulary) = (ids.Shape[0], ids.Shape[1], config.VocabularySize);
            Assert.True(length <= config.MaxSequenceLength, $"{name}: longer than max_seq_len.");
            AssertIds(ids, [batchSize, length], vocabulary, name);
            AssertIds(file.Get("targets"), [batchSize, length], vocabulary, name);
        }
        AssertFloats(file.Get("logits", [batchSize, length, vocabulary]), name);
        AssertFloats(file.Get("loss", []), name);
        AssertFloats(file.Get("losses", [Steps]), name);
        var losses = file.Floats("losses");
        Assert.Equal(file.Scalar("loss"), losses[0]);
        Assert.True(losses[^1] < losses[0], $"{name}: training on one batch should lower the loss: {string.Join(", ", losses)}.");
    }

    [Theory]
    [MemberData(nameof(Files))]
    public void Config_uses_exactly_the_JSON_names_and_values_of_the_CSharp_config(string name)
    {
        var file = ParitySpec.Load(name);
        var python = JsonNode.Parse(file.Metadata[StateDict.ConfigKey])!.AsObject();
        var csharp = JsonNode.Parse(StateDict.ModelKind(file) == StateDict.TransformerKind
            ? StateDict.ReadTransformerConfig(file).ToJson()
            : StateDict.ReadLanguageModelConfig(file).ToJson())!.AsObject();

        Assert.Equal(python.Select(p => p.Key).Order(StringComparer.Ordinal), csharp.Select(p => p.Key).Order(StringComparer.Ordinal));
        foreach (var (key, value) in python)
        {
            var ours = csharp[key]!;
            switch (value!.GetValueKind())
            {
                case JsonValueKind.Number:
                    var (a, b) = (value.GetValue<double>(), ours.GetValue<double>());
                    Assert.True(Math.Abs(a - b) <= 1e-7 * Math.Abs(a), $"{name}: {key} is {a} in the file and {b} after C# parsing.");
                    break;
                default:
                    Assert.Equal(value.ToJsonString(), ours.ToJsonString());
                    break;
            }
        }
    }

    [Theory]
    [MemberData(nameof(Files))]
    public void Weights_load_with_StateDict_into_a_module_with_the_documented_parameters(string name)
    {
        var file = ParitySpec.Load(name);
        var expected = ParitySpec.ExpectedParameters(StateDict.ModelKind(file), file.Metadata[StateDict.ConfigKey]);
        using var module = new SpecModule(devices.Get("cpu"), expected);

        var extras = Assert.Throws<InvalidDataException>(() => StateDict.Load(module, file));
        // Dozens of extras (grad.*, the batch, the outputs): the first few are named, the rest counted.
        Assert.Contains("does not have (ignore them with IgnoreExtraTensors): grad.", extras.Message, StringComparison.Ordinal);
        Assert.Contains($" and {file.Tensors.Count - expected.Count - 8} more", extras.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("missing", extras.Message, StringComparison.Ordinal);

        StateDict.Load(module, file, new StateDictLoadOptions { IgnoreExtraTensors = true });
        foreach (var parameter in module.Parameters())
            Assert.Equal(file.Floats(parameter.Name), parameter.Value.ToArray());
    }

    /// <summary>A flat module with exactly the specified parameters (test-only).</summary>
    private sealed class SpecModule : Module
    {
        public SpecModule(ComputeDevice device, IEnumerable<ParitySpec.Entry> entries)
            : base(device)
        {
            foreach (var entry in entries)
                Parameter(entry.Name, entry.Shape, entry.Decay);
        }
    }

    private static void AssertFloats(SafeTensor tensor, string name)
    {
        Assert.True(tensor.Type == SafeTensorType.F32, $"{name}/{tensor.Name} is {tensor.Type}, expected F32.");
        var values = tensor.ToFloats();
        var bad = Array.FindIndex(values, v => !float.IsFinite(v));
        Assert.True(bad < 0, $"{name}/{tensor.Name}[{bad}] is not finite.");
    }

    private static void AssertIds(SafeTensor tensor, int[] shape, int vocabulary, string name)
    {
        Assert.True(tensor.Type == SafeTensorType.I64, $"{name}/{tensor.Name} is {tensor.Type}, expected I64.");
        Assert.Equal(shape, tensor.Shape);
        Assert.All(tensor.ToInts(), id => Assert.InRange(id, 0, vocabulary - 1));
    }
}
