using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using GpuTransformer.Layers.IO;
using GpuTransformer.Layers;

namespace GpuTransformer.Training.Parity;

/// <summary>
/// The token ids of one batch under the names of the parity golden files
/// (<c>scripts/parity/README.md</c>): <c>ids</c>, <c>targets</c> [B, T] for a
/// <c>language_model</c>; <c>src</c> [B, S], <c>tgt_in</c>, <c>tgt_out</c> [B, T] for a
/// <c>transformer</c>. Read from a safetensors file (I64 or I32 tensors; other tensors are
/// ignored, so a golden file is its own batch) or from JSON
/// (<c>{"ids": [[5, 3, 9], [4, 2, 0]], "targets": [[3, 9, 1], [2, 0, 0]]}</c>; one flat list is
/// one sequence). Shapes are checked here; ids against a model in <see cref="ModelParity.Validate"/>.
/// </summary>
public sealed class ParityBatch
{
    private readonly Dictionary<string, TokenIds> tensors;

    private ParityBatch(string kind, Dictionary<string, TokenIds> tensors, string source)
    {
        Kind = kind;
        this.tensors = tensors;
        Source = source;
    }

    /// <summary>The model kind the batch is for (<see cref="StateDict.LanguageModelKind"/> or <see cref="StateDict.TransformerKind"/>).</summary>
    public string Kind { get; }

    /// <summary>Where the batch came from (for messages).</summary>
    public string Source { get; }

    /// <summary>The ids named <paramref name="name"/> (one of <see cref="NamesFor"/>).</summary>
    public TokenIds this[string name] => tensors[name];

    /// <summary>The tensors in the order of <see cref="NamesFor"/>.</summary>
    public IEnumerable<(string Name, TokenIds Ids)> Tensors => NamesFor(Kind).Select(n => (n, tensors[n]));

    /// <summary>The tensor names a batch of <paramref name="kind"/> has, inputs first, targets last.</summary>
    /// <exception cref="InvalidDataException">Unknown kind.</exception>
    public static IReadOnlyList<string> NamesFor(string kind) => kind switch
    {
        StateDict.LanguageModelKind => ["ids", "targets"],
        StateDict.TransformerKind => ["src", "tgt_in", "tgt_out"],
        _ => throw new InvalidDataException($"Unknown model kind '{kind}' (known: {StateDict.TransformerKind}, {StateDict.LanguageModelKind})."),
    };

    /// <summary>A batch from arrays (row-major, each <c>[rows, length]</c>), checked as a file's would be.</summary>
    public static ParityBatch Create(string kind, IReadOnlyDictionary<string, TokenIds> ids, string source = "batch")
    {
        ArgumentNullException.ThrowIfNull(ids);
        var names = NamesFor(kind);
        var found = new Dictionary<string, TokenIds>(StringComparer.Ordinal);
        foreach (var name in names)
            found[name] = ids.TryGetValue(name, out var value) ? value : throw Missing(source, kind, name);
        return Checked(kind, found, source);
    }

    /// <summary>Reads <paramref name="path"/>: JSON when it ends in <c>.json</c>, else safetensors.</summary>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="InvalidDataException">Malformed file, a missing tensor, a non-integer dtype or mismatched shapes (the message names them).</exception>
    public static ParityBatch Read(string path, string kind)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!path.EndsWith(".json", StringComparison.OrdinalIgnoreCase))
            return From(SafeTensors.Read(path), kind);
        if (!File.Exists(path))
            throw new FileNotFoundException($"Batch file '{path}' does not exist.", path);
        return FromJson(File.ReadAllText(path), kind, path);
    }

    /// <summary>The batch tensors of a safetensors file (other tensors are ignored).</summary>
    public static ParityBatch From(SafeTensorFile file, string kind)
    {
        ArgumentNullException.ThrowIfNull(file);
        var found = new Dictionary<string, TokenIds>(StringComparer.Ordinal);
        foreach (var name in NamesFor(kind))
        {
            if (!file.Tensors.TryGetValue(name, out var tensor))
                throw Missing(file.Source, kind, name);
            if (tensor.Type is not (SafeTensorType.I64 or SafeTensorType.I32))
                throw new InvalidDataException($"'{file.Source}': tensor '{name}' is {tensor.Type}; token ids must be I64 or I32.");
            var (rows, length) = tensor.Shape switch
            {
                [var t] => (1, t),
                [var b, var t] => (b, t),
                _ => throw new InvalidDataException($"'{file.Source}': tensor '{name}' has shape {Tensor<int>.Describe(tensor.Shape)}; token ids must be [B, T] (or [T] for one sequence)."),
            };
            found[name] = Ids(file.Source, name, tensor.ToInts(), rows, length);
        }
        return Checked(kind, found, file.Source);
    }

    /// <summary>
    /// The batch of a JSON object whose members are the tensor names, each a list of rows of
    /// integers (or one flat list: a single sequence). Other members are ignored.
    /// </summary>
    public static ParityBatch FromJson(string json, string kind, string source = "JSON batch")
    {
        ArgumentNullException.ThrowIfNull(json);
        JsonObject root;
        try
        {
            root = JsonNode.Parse(json) as JsonObject
                ?? throw new InvalidDataException($"'{source}' is not a JSON object with the batch's id lists.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{source}' is not valid JSON: {e.Message}", e);
        }
        var found = new Dictionary<string, TokenIds>(StringComparer.Ordinal);
        foreach (var name in NamesFor(kind))
        {
            if (root[name] is not JsonArray array)
                throw root.ContainsKey(name) ? new InvalidDataException($"'{source}': '{name}' must be a list of rows of token ids.") : Missing(source, kind, name);
            var rows = array.All(item => item is JsonArray) && array.Count > 0 ? array.Cast<JsonArray>().ToList() : [array];
            var length = rows[0].Count;
            if (rows.Any(row => row.Count != length))
                throw new InvalidDataException($"'{source}': the rows of '{name}' have different lengths ({string.Join(", ", rows.Select(r => r.Count).Distinct())}); pad them to one length.");
            var values = new int[rows.Count * length];
            for (var b = 0; b < rows.Count; b++)
            {
                for (var t = 0; t < length; t++)
                    values[(b * length) + t] = Integer(source, name, rows[b][t], b, t);
            }
            found[name] = Ids(source, name, values, rows.Count, length);
        }
        return Checked(kind, found, source);
    }

    /// <summary>The batch as the model reads it: ids → targets, or src, tgt_in → tgt_out.</summary>
    public ModelBatch ToModelBatch() => Kind == StateDict.LanguageModelKind
        ? new ModelBatch(tensors["ids"], tensors["targets"])
        : new ModelBatch(tensors["tgt_in"], tensors["tgt_out"]) { Source = tensors["src"] };

    /// <summary>The ids as I64 tensors (what PyTorch uses) under their names.</summary>
    public IEnumerable<SafeTensor> ToSafeTensors() =>
        Tensors.Select(t => SafeTensor.FromLongs(t.Name, [t.Ids.Batch, t.Ids.Length], Array.ConvertAll(t.Ids.Span.ToArray(), v => (long)v)));

    /// <summary>The shapes, e.g. <c>ids [3, 8], targets [3, 8]</c>.</summary>
    public override string ToString() => string.Join(", ", Tensors.Select(t => $"{t.Name} {t.Ids}"));

    private static ParityBatch Checked(string kind, Dictionary<string, TokenIds> found, string source)
    {
        // Inputs and targets pair up position by position; the transformer's source only shares the batch size.
        var (input, target) = kind == StateDict.LanguageModelKind ? ("ids", "targets") : ("tgt_in", "tgt_out");
        if (found[input].Batch != found[target].Batch || found[input].Length != found[target].Length)
            throw new InvalidDataException($"'{source}': {target} has shape {found[target]} but {input} has shape {found[input]}; they must match.");
        if (kind == StateDict.TransformerKind && found["src"].Batch != found[input].Batch)
            throw new InvalidDataException($"'{source}': src has shape {found["src"]} but {input} has shape {found[input]}; the batch sizes must match.");
        return new ParityBatch(kind, found, source);
    }

    private static TokenIds Ids(string source, string name, int[] values, int rows, int length)
    {
        if (rows < 1 || length < 1)
            throw new InvalidDataException($"'{source}': '{name}' is empty ([{rows}, {length}]).");
        return new TokenIds(values, rows, length);
    }

    private static int Integer(string source, string name, JsonNode? node, int b, int t)
    {
        if (node is JsonValue value && value.TryGetValue<long>(out var id) && id is >= int.MinValue and <= int.MaxValue)
            return (int)id;
        if (node is JsonValue number && number.TryGetValue<double>(out var real) && real == Math.Floor(real) && real is >= int.MinValue and <= int.MaxValue)
            return (int)real;
        throw new InvalidDataException(string.Create(CultureInfo.InvariantCulture, $"'{source}': {name}[{b}][{t}] is {node?.ToJsonString() ?? "null"}, not an integer token id."));
    }

    private static InvalidDataException Missing(string source, string kind, string name) =>
        new($"'{source}' has no '{name}'; a {kind} batch needs {string.Join(", ", NamesFor(kind).Select(n => $"'{n}'"))}.");
}
