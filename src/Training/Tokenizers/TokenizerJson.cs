using System.Text.Json.Nodes;

namespace GpuTransformer.Training.Tokenizers;

/// <summary>Reading fields of a tokenizer's JSON description with errors that name the field.</summary>
internal static class TokenizerJson
{
    public static int Int(JsonObject json, string name) =>
        Field(json, name).GetValue<int>();

    public static IEnumerable<string> Strings(JsonObject json, string name) =>
        Array(json, name).Select((n, i) => n?.GetValue<string>() ?? throw new FormatException($"Tokenizer field '{name}'[{i}] is null."));

    public static IEnumerable<int> Ints(JsonObject json, string name) =>
        Array(json, name).Select((n, i) => n?.GetValue<int>() ?? throw new FormatException($"Tokenizer field '{name}'[{i}] is null."));

    private static JsonArray Array(JsonObject json, string name) =>
        Field(json, name) as JsonArray ?? throw new FormatException($"Tokenizer field '{name}' is not an array.");

    private static JsonNode Field(JsonObject json, string name) =>
        json[name] ?? throw new FormatException($"Tokenizer description has no '{name}'.");
}
