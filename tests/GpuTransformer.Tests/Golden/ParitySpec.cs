using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace GpuTransformer.Tests.Golden;

/// <summary>
/// The state_dict specification of <c>scripts/parity/README.md</c> (its "State dict of …"
/// tables) expanded for a configuration, and the parity golden files of
/// <c>tests/golden/parity</c>. The PyTorch generator checks its models against the same
/// tables; model tests check ours.
/// </summary>
public static partial class ParitySpec
{
    /// <summary>One parameter: state_dict name, shape, whether AdamW decays it.</summary>
    public sealed record Entry(string Name, int[] Shape, bool Decay);

    private sealed record Row(string Template, string[] Shape, string Condition, bool Decay);

    /// <summary>Where the test project copies scripts/parity/README.md.</summary>
    public static string SpecPath => Path.Combine(AppContext.BaseDirectory, "scripts", "parity", "README.md");

    /// <summary>Where the test project copies tests/golden/parity.</summary>
    public static string GoldenDirectory => Path.Combine(AppContext.BaseDirectory, "golden", "parity");

    /// <summary>The golden file of <paramref name="name"/> (e.g. <c>lm_post_relu</c>).</summary>
    public static SafeTensorFile Load(string name) => SafeTensors.Read(Path.Combine(GoldenDirectory, name + ".safetensors"));

    /// <summary>The cases listed in the generated tests/golden/parity/README.md, in its order.</summary>
    public static IReadOnlyList<string> Cases() =>
        File.ReadLines(Path.Combine(GoldenDirectory, "README.md"))
            .Select(line => CaseHeading().Match(line))
            .Where(m => m.Success)
            .Select(m => m.Groups[1].Value)
            .ToList();

    /// <summary>
    /// The parameters a model of <paramref name="kind"/> (<c>transformer</c> or <c>language_model</c>)
    /// with configuration <paramref name="configJson"/> (PyTorch names) has, in PyTorch's
    /// state_dict order: layer rows repeat per layer, conditional rows follow the config's flags.
    /// </summary>
    public static IReadOnlyList<Entry> ExpectedParameters(string kind, string configJson)
    {
        var config = JsonNode.Parse(configJson)?.AsObject() ?? throw new InvalidDataException("Config JSON is not an object.");
        var rows = Tables().TryGetValue(kind, out var table) ? table : throw new InvalidDataException($"{SpecPath} has no table for '{kind}'.");

        var entries = new List<Entry>();
        for (var start = 0; start < rows.Count;)
        {
            // Consecutive rows of one layer stack form a block repeated per layer.
            var end = start + 1;
            while (end < rows.Count && rows[end].Condition == rows[start].Condition && rows[start].Condition.StartsWith("i < ", StringComparison.Ordinal))
                end++;
            var block = rows.GetRange(start, end - start);
            var condition = rows[start].Condition;
            if (LayerCondition().Match(condition) is { Success: true } layers)
            {
                var count = Value(config, layers.Groups[1].Value).GetValue<int>();
                for (var i = 0; i < count; i++)
                    entries.AddRange(block.Select(r => Expand(r, config, r.Template.Replace("{i}", i.ToString(System.Globalization.CultureInfo.InvariantCulture), StringComparison.Ordinal))));
            }
            else if (condition == "always")
            {
                entries.AddRange(block.Select(r => Expand(r, config, r.Template)));
            }
            else if (FlagCondition().Match(condition) is { Success: true } flag)
            {
                if (Value(config, flag.Groups[1].Value).GetValue<bool>() == (flag.Groups[2].Value == "true"))
                    entries.AddRange(block.Select(r => Expand(r, config, r.Template)));
            }
            else
            {
                throw new InvalidDataException($"{SpecPath}: unknown condition '{condition}'.");
            }
            start = end;
        }
        return entries;
    }

    private static Entry Expand(Row row, JsonObject config, string name) =>
        new(name, row.Shape.Select(dimension => dimension.Split('*').Aggregate(1, (product, factor) =>
            product * (int.TryParse(factor, out var literal) ? literal : Value(config, factor).GetValue<int>()))).ToArray(), row.Decay);

    private static JsonNode Value(JsonObject config, string name) =>
        config[name] ?? throw new InvalidDataException($"The config has no '{name}', which {SpecPath} uses.");

    /// <summary>kind → rows of its table.</summary>
    private static Dictionary<string, List<Row>> Tables()
    {
        var tables = new Dictionary<string, List<Row>>(StringComparer.Ordinal);
        List<Row>? current = null;
        foreach (var line in File.ReadLines(SpecPath))
        {
            if (TableHeading().Match(line) is { Success: true } heading)
            {
                current = [];
                tables.Add(heading.Groups[1].Value, current);
            }
            else if (line.StartsWith("## ", StringComparison.Ordinal))
            {
                current = null;
            }
            else if (current is not null && TableRow().Match(line) is { Success: true } row)
            {
                current.Add(new Row(row.Groups[1].Value, row.Groups[2].Value.Split(',', StringSplitOptions.TrimEntries),
                    row.Groups[3].Value.Trim(), row.Groups[4].Value == "yes"));
            }
        }
        return tables;
    }

    [GeneratedRegex(@"^### parity/(\w+)\.safetensors$")]
    private static partial Regex CaseHeading();

    [GeneratedRegex(@"^## State dict of `(\w+)`")]
    private static partial Regex TableHeading();

    [GeneratedRegex(@"^\| `([^`]+)` \| \[([^\]]*)\] \| ([^|]+) \| (yes|no) \|")]
    private static partial Regex TableRow();

    [GeneratedRegex(@"^i < (\w+)$")]
    private static partial Regex LayerCondition();

    [GeneratedRegex(@"^(\w+) = (true|false)$")]
    private static partial Regex FlagCondition();
}
