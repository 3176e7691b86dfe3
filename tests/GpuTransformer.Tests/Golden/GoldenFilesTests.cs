using System.Text.RegularExpressions;

namespace GpuTransformer.Tests.Golden;

/// <summary>
/// The PyTorch golden files (tests/golden, made by scripts/golden/make_kernel_golden.py) are
/// present, parse with <see cref="SafeTensors.Read(string)"/>, hold exactly the tensors,
/// dtypes and shapes the README lists, carry the stated conventions in their metadata, and
/// are finite. Needs no kernels.
/// </summary>
public sealed partial class GoldenFilesTests
{
    /// <summary>The cases the kernel golden tests rely on; the README may list more.</summary>
    private static readonly string[] RequiredCases =
    [
        "attention_noncausal", "attention_causal", "attention_keypad", "attention_cross",
        "softmax", "softmax_causal", "layernorm", "positional_encoding_even", "positional_encoding_odd",
        "gelu", "relu", "cross_entropy", "cross_entropy_smoothing", "adamw",
    ];

    private static readonly string[] ConventionKeys = ["case", "generator", "torch", "inputs", "math", "outputs"];

    /// <summary>Where the test project copies tests/golden.</summary>
    public static string Directory => Path.Combine(AppContext.BaseDirectory, "golden");

    /// <summary>The golden file of <paramref name="name"/> (e.g. <c>attention_causal</c>).</summary>
    public static SafeTensorFile Load(string name) => SafeTensors.Read(Path.Combine(Directory, "kernels", name + ".safetensors"));

    public static TheoryData<string> Files
    {
        get
        {
            var data = new TheoryData<string>();
            foreach (var name in Readme().Keys)
                data.Add(name);
            return data;
        }
    }

    [Fact]
    public void README_and_the_directory_list_the_same_files_including_every_required_case()
    {
        var listed = Readme().Keys.Order(StringComparer.Ordinal).ToList();
        var present = System.IO.Directory.GetFiles(Path.Combine(Directory, "kernels"), "*.safetensors")
            .Select(f => Path.GetFileNameWithoutExtension(f)!).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(listed, present);
        Assert.All(RequiredCases, c => Assert.Contains(c, listed));
        Assert.All(Readme().Values, tensors => Assert.NotEmpty(tensors));
        var total = System.IO.Directory.GetFiles(Path.Combine(Directory, "kernels")).Sum(f => new FileInfo(f).Length);
        Assert.True(total < 1_000_000, $"Golden data holds {total} bytes; keep it well under 1 MB.");
    }

    [Theory]
    [MemberData(nameof(Files))]
    public void File_parses_and_holds_exactly_the_README_tensors_finite(string name)
    {
        var file = Load(name);
        var listed = Readme()[name];

        Assert.Equal(listed.Keys.Order(StringComparer.Ordinal), file.Tensors.Keys.Order(StringComparer.Ordinal));
        foreach (var (tensorName, (type, shape)) in listed)
        {
            var tensor = file.Get(tensorName, shape);
            Assert.True(type == tensor.Type, $"{name}/{tensorName}: README says {type}, file has {tensor.Type}.");
            if (type is SafeTensorType.F32 or SafeTensorType.F64)
            {
                var values = tensor.ToDoubles();
                var bad = Array.FindIndex(values, v => !double.IsFinite(v));
                Assert.True(bad < 0, $"{name}/{tensorName}[{bad}] is {(bad < 0 ? 0 : values[bad])}.");
            }
        }
        foreach (var key in ConventionKeys)
            Assert.True(file.Metadata.ContainsKey(key), $"{name}: metadata lacks '{key}'.");
        Assert.Equal(name, file.Metadata["case"]);
        Assert.Contains("float64", file.Metadata["math"], StringComparison.Ordinal);
        Assert.Contains("float32", file.Metadata["outputs"], StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("attention_noncausal")]
    [InlineData("attention_causal")]
    [InlineData("attention_keypad")]
    [InlineData("attention_cross")]
    public void Attention_files_agree_with_an_independent_forward_in_the_documented_layout(string name)
    {
        // Recomputes P, LSE and O in double from q, k, v read as [B, T, H, d] with the
        // documented masks: checks the layout and mask conventions, not the kernels.
        var file = Load(name);
        var q = file.Get("q");
        var (batch, tq, heads, d) = (q.Shape[0], q.Shape[1], q.Shape[2], q.Shape[3]);
        var tk = file.Get("k").Shape[1];
        var causal = file.Metadata["causal"] == "true";
        var padding = file.Tensors.ContainsKey("key_padding_mask") ? file.Ints("key_padding_mask", [batch, tk]) : null;
        var (qs, ks, vs) = (q.ToDoubles(), file.Get("k").ToDoubles(), file.Get("v").ToDoubles());
        var (p, lse, o) = (file.Floats("P"), file.Floats("LSE"), file.Floats("O"));
        var scale = 1 / Math.Sqrt(d);
        Assert.Equal(scale, double.Parse(file.Metadata["scale"], CultureInfo.InvariantCulture), 12);

        var worst = 0.0;
        var scores = new double[tk];
        for (var b = 0; b < batch; b++)
        for (var h = 0; h < heads; h++)
        for (var i = 0; i < tq; i++)
        {
            var max = double.NegativeInfinity;
            for (var j = 0; j < tk; j++)
            {
                var masked = (causal && j > i) || (padding is not null && padding[b * tk + j] == 1);
                var dot = 0.0;
                for (var c = 0; c < d; c++)
                    dot += qs[((b * tq + i) * heads + h) * d + c] * ks[((b * tk + j) * heads + h) * d + c];
                scores[j] = masked ? double.NegativeInfinity : dot * scale;
                max = Math.Max(max, scores[j]);
            }
            var sum = scores.Sum(s => Math.Exp(s - max));
            var logSumExp = max + Math.Log(sum);
            worst = Math.Max(worst, Math.Abs(logSumExp - lse[(b * heads + h) * tq + i]));
            for (var c = 0; c < d; c++)
            {
                var output = 0.0;
                for (var j = 0; j < tk; j++)
                {
                    var probability = Math.Exp(scores[j] - logSumExp);
                    output += probability * vs[((b * tk + j) * heads + h) * d + c];
                    if (c == 0)
                    {
                        var stored = p[((b * heads + h) * tq + i) * tk + j];
                        Assert.True(!double.IsNegativeInfinity(scores[j]) || stored == 0, $"{name}: P is {stored} at a masked position.");
                        worst = Math.Max(worst, Math.Abs(probability - stored));
                    }
                }
                worst = Math.Max(worst, Math.Abs(output - o[((b * tq + i) * heads + h) * d + c]));
            }
        }
        Assert.True(worst < 1e-5, $"{name}: largest difference from the independent forward is {worst:g3}.");
    }

    /// <summary>The README's file sections: name → tensor → (dtype, shape).</summary>
    private static Dictionary<string, Dictionary<string, (SafeTensorType Type, int[] Shape)>> Readme()
    {
        var files = new Dictionary<string, Dictionary<string, (SafeTensorType, int[])>>(StringComparer.Ordinal);
        Dictionary<string, (SafeTensorType, int[])>? current = null;
        foreach (var line in File.ReadLines(Path.Combine(Directory, "README.md")))
        {
            if (FileHeading().Match(line) is { Success: true } heading)
            {
                current = new Dictionary<string, (SafeTensorType, int[])>(StringComparer.Ordinal);
                files.Add(heading.Groups[1].Value, current);
            }
            else if (current is not null && TensorRow().Match(line) is { Success: true } row)
            {
                var type = SafeTensors.ParseType(row.Groups[2].Value)
                    ?? throw new InvalidDataException($"README lists unknown dtype {row.Groups[2].Value}.");
                var shape = row.Groups[3].Value.Length == 0
                    ? []
                    : row.Groups[3].Value.Split(',').Select(s => int.Parse(s.Trim(), CultureInfo.InvariantCulture)).ToArray();
                current.Add(row.Groups[1].Value, (type, shape));
            }
        }
        return files;
    }

    [GeneratedRegex(@"^### kernels/(\w+)\.safetensors\s*$")]
    private static partial Regex FileHeading();

    [GeneratedRegex(@"^\| `(\w+)` \| (\w+) \| \[([\d, ]*)\] \|")]
    private static partial Regex TensorRow();
}
