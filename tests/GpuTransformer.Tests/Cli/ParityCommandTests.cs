using System.Text.Json.Nodes;
using GpuTransformer.Cli;
using GpuTransformer.Cli.Commands;
using GpuTransformer.Training.Parity;

namespace GpuTransformer.Tests.Cli;

/// <summary>
/// <c>gpu-transformer parity</c> in process (<see cref="CliApp.Run(string[], TextWriter, TextWriter, bool?)"/>) on
/// the CPU simulator (always present; one step of a golden case takes a second or two): a
/// golden case passes its own comparison and the output holds exactly the golden's logits,
/// loss and gradient names; a JSON batch gives the same output as the safetensors batch; a
/// reference with one gradient entry off by 1e-3 fails with exit code 3 naming that tensor; bad
/// input fails with one error line and exit code 1.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class ParityCommandTests : IDisposable
{
    private readonly TempFolder folder = new();

    public void Dispose() => folder.Dispose();

    private static string Golden(string name) => Path.Combine(ParitySpec.GoldenDirectory, name + ".safetensors");

    private static (int Code, string Out, string Error) Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = CliApp.Run(["--backend", "cpu", .. args], stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    [Fact]
    public void A_golden_case_matches_itself_and_the_output_has_the_golden_names()
    {
        var output = Path.Combine(folder.Path, "out.safetensors");
        var (code, stdout, stderr) = Run("parity", Golden("transformer_pre_relu_padded_shared"), "--compare", Golden("transformer_pre_relu_padded_shared"), "--out", output);
        Assert.Equal("", stderr);
        Assert.Equal(0, code);
        Assert.Contains("Model: transformer, 11,591 parameters in 66 tensors", stdout);
        Assert.Contains("Batch: src [3, 8], tgt_in [3, 9], tgt_out [3, 9]", stdout);
        Assert.Contains("All 68 tensors within tolerance", stdout);

        var golden = ParitySpec.Load("transformer_pre_relu_padded_shared");
        var written = SafeTensors.Read(output);
        var expectedNames = golden.Tensors.Keys.Where(n => n is "logits" or "loss" || n.StartsWith("grad.", StringComparison.Ordinal)).Order(StringComparer.Ordinal);
        Assert.Equal(expectedNames, written.Tensors.Keys.Order(StringComparer.Ordinal));
        Assert.All(written.Tensors.Values, t => Assert.Equal(golden.Tensors[t.Name].Shape, t.Shape));
        Assert.Equal(StateDict.TransformerKind, written.Metadata[StateDict.ModelKey]);
        TestTensors.AssertClose(golden.Floats("logits"), written.Floats("logits"), 1e-5, 1e-4, "written logits");
    }

    [Fact]
    public void A_json_batch_gives_the_output_of_the_safetensors_batch()
    {
        var golden = ParitySpec.Load("lm_pre_relu_padded_tied");
        var ids = golden.Get("ids");
        var rows = Enumerable.Range(0, ids.Shape[0]).Select(b => new JsonArray(golden.Ints("ids").Skip(b * ids.Shape[1]).Take(ids.Shape[1]).Select(v => (JsonNode)v).ToArray()));
        var targets = Enumerable.Range(0, ids.Shape[0]).Select(b => new JsonArray(golden.Ints("targets").Skip(b * ids.Shape[1]).Take(ids.Shape[1]).Select(v => (JsonNode)v).ToArray()));
        var json = folder.Write("batch.json", new JsonObject { ["ids"] = new JsonArray([.. rows]), ["targets"] = new JsonArray([.. targets]) }.ToJsonString());
        var fromJson = Path.Combine(folder.Path, "json.safetensors");
        var fromGolden = Path.Combine(folder.Path, "golden.safetensors");

        Assert.Equal(0, Run("parity", Golden("lm_pre_relu_padded_tied"), "--batch", json, "--out", fromJson).Code);
        Assert.Equal(0, Run("parity", Golden("lm_pre_relu_padded_tied"), "--out", fromGolden, "--compare", Golden("lm_pre_relu_padded_tied")).Code);
        var (a, b) = (SafeTensors.Read(fromJson), SafeTensors.Read(fromGolden));
        Assert.Equal(b.Tensors.Keys, a.Tensors.Keys);
        Assert.All(a.Tensors.Values, t => Assert.Equal(b.Tensors[t.Name].Data, t.Data));
    }

    [Fact]
    public void A_reference_outside_tolerance_exits_3_naming_the_tensor()
    {
        var golden = ParitySpec.Load("lm_post_relu");
        var nudged = golden.Floats("grad.layers.1.norm2.bias");
        nudged[3] += 1e-3f * nudged.Max(Math.Abs); // ten times the 1e-4 allowance
        var reference = Write("nudged.safetensors", golden, replace: SafeTensor.FromFloats("grad.layers.1.norm2.bias", [nudged.Length], nudged));

        var (code, stdout, stderr) = Run("parity", Golden("lm_post_relu"), "--compare", reference, "--out", Path.Combine(folder.Path, "out.safetensors"));
        Assert.Equal(ParityCommand.OutsideTolerance, code);
        Assert.Matches(@"grad\.layers\.1\.norm2\.bias\s*│.*OUTSIDE", stdout);
        Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("error: 1 of 30 tensors outside tolerance", stderr);
        Assert.Contains("grad.layers.1.norm2.bias", stderr);

        // A looser tolerance accepts it.
        Assert.Equal(0, Run("parity", Golden("lm_post_relu"), "--compare", reference, "--rtol", "2e-3", "--out", Path.Combine(folder.Path, "out.safetensors")).Code);
    }

    public static TheoryData<string, string> BadInputs => new()
    {
        { "missing checkpoint", "does not exist" },
        { "not a safetensors file", "is not a safetensors file" },
        { "no model metadata", "has no 'model' entry in its metadata" },
        { "config does not fit the weights", "does not match the model's parameters: shapes differ: tok_embed.weight: file [23, 16], model [23, 24]" },
        { "reference of another model", "is for another model" },
        { "id outside the vocabulary", "Token id 23 at [1, 2] of ids is outside the vocabulary of size 23" },
        { "sequence too long", "ids [1, 17] has sequences of 17 tokens, longer than max_seq_len 16" },
        { "mismatched shapes", "targets has shape [1, 4] but ids has shape [1, 5]; they must match" },
        { "malformed JSON", "is not valid JSON" },
        { "ragged JSON rows", "the rows of 'ids' have different lengths" },
        { "missing targets", "has no 'targets'; a language_model batch needs 'ids', 'targets'" },
        { "float ids", "tensor 'ids' is F32; token ids must be I64 or I32" },
        { "every target is pad", "every target in targets is pad_id 0" },
        { "transformer batch sizes differ", "src has shape [2, 3] but tgt_in has shape [1, 4]; the batch sizes must match" },
    };

    [Theory]
    [MemberData(nameof(BadInputs))]
    public void Bad_input_is_one_error_line_and_exit_code_1(string problem, string message)
    {
        var lm = Golden("lm_post_relu");
        var golden = ParitySpec.Load("lm_post_relu");
        string[] args = problem switch
        {
            "missing checkpoint" => [Path.Combine(folder.Path, "nothing.safetensors")],
            "not a safetensors file" => [folder.Write("junk.safetensors", "this is not a safetensors file")],
            "no model metadata" => [Write("bare.safetensors", golden, metadata: new Dictionary<string, string>())],
            "config does not fit the weights" => [Write("wide.safetensors", golden, metadata: new Dictionary<string, string>(golden.Metadata)
            {
                [StateDict.ConfigKey] = golden.Metadata[StateDict.ConfigKey].Replace("\"d_model\":16", "\"d_model\":24", StringComparison.Ordinal),
            })],
            "reference of another model" => [lm, "--compare", Golden("lm_pre_gelu_tanh")],
            "id outside the vocabulary" => [lm, "--batch", folder.Write("b.json", """{"ids": [[1, 2, 3], [4, 5, 23]], "targets": [[2, 3, 4], [5, 6, 7]]}""")],
            "sequence too long" => [lm, "--batch", folder.Write("b.json", $$"""{"ids": [{{string.Join(",", Enumerable.Repeat(3, 17))}}], "targets": [{{string.Join(",", Enumerable.Repeat(4, 17))}}]}""")],
            "mismatched shapes" => [lm, "--batch", folder.Write("b.json", """{"ids": [[1, 2, 3, 4, 5]], "targets": [[2, 3, 4, 5]]}""")],
            "malformed JSON" => [lm, "--batch", folder.Write("b.json", """{"ids": [[1, 2, 3]], "targets": [[2, 3, 4]""")],
            "ragged JSON rows" => [lm, "--batch", folder.Write("b.json", """{"ids": [[1, 2, 3], [1, 2]], "targets": [[2, 3, 4], [2, 3]]}""")],
            "missing targets" => [lm, "--batch", folder.Write("b.json", """{"ids": [[1, 2, 3]]}""")],
            "float ids" => [lm, "--batch", WriteTensors("f.safetensors", SafeTensor.FromFloats("ids", [1, 3], [1f, 2f, 3f]), SafeTensor.FromLongs("targets", [1, 3], [2, 3, 4]))],
            "every target is pad" => [lm, "--batch", folder.Write("b.json", """{"ids": [[1, 2, 3]], "targets": [[0, 0, 0]]}""")],
            "transformer batch sizes differ" => [Golden("transformer_post_relu"), "--batch", folder.Write("b.json", """{"src": [[3, 4, 5], [6, 7, 8]], "tgt_in": [[1, 3, 4, 5]], "tgt_out": [[3, 4, 5, 2]]}""")],
            _ => throw new ArgumentException(problem),
        };
        var (code, stdout, stderr) = Run(["parity", .. args, "--out", Path.Combine(folder.Path, "out.safetensors")]);
        Assert.Equal(CliApp.Failure, code);
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("error: ", lines[0]);
        Assert.Contains(message, lines[0]);
        Assert.DoesNotContain("   at ", stderr);
        Assert.DoesNotContain("Wrote", stdout);
    }

    /// <summary>A copy of <paramref name="file"/> with <paramref name="replace"/> swapped in and/or other metadata.</summary>
    private string Write(string name, SafeTensorFile file, SafeTensor? replace = null, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var path = Path.Combine(folder.Path, name);
        SafeTensors.Write(path, file.Tensors.Values.Select(t => t.Name == replace?.Name ? replace : t), metadata ?? file.Metadata);
        return path;
    }

    private string WriteTensors(string name, params SafeTensor[] tensors)
    {
        var path = Path.Combine(folder.Path, name);
        SafeTensors.Write(path, tensors);
        return path;
    }
}
