using System.Globalization;
using System.Text;
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Layers.IO;

namespace GpuTransformer.Layers;

/// <summary>How <see cref="StateDict.Load(Module, SafeTensorFile, StateDictLoadOptions?)"/> matches a file's tensors to a model's parameters.</summary>
public sealed record StateDictLoadOptions
{
    /// <summary>
    /// A name prefix the file's tensors carry and the model's parameters do not, e.g.
    /// <c>model.transformer</c> (a trailing dot is implied): parameter <c>encoder.norm.weight</c> is
    /// read from <c>model.transformer.encoder.norm.weight</c>, and tensors outside the prefix count
    /// as extra. Empty (the default) for none.
    /// </summary>
    public string Prefix { get; init; } = "";

    /// <summary>
    /// Skip tensors that are not parameters of the model (optimizer state, a golden file's inputs
    /// and outputs) instead of refusing the file.
    /// </summary>
    public bool IgnoreExtraTensors { get; init; }
}

/// <summary>
/// A model's parameters as a safetensors file with PyTorch state_dict names (each
/// <see cref="Parameter.Name"/>), so checkpoints move between GpuTransformer and PyTorch
/// (<c>scripts/parity/README.md</c> lists the names per model). Tensors are F32 in PyTorch's
/// layout; <c>__metadata__</c> holds <see cref="FormatKey"/>, <see cref="FormatVersionKey"/>,
/// <see cref="ModelKey"/> (<see cref="TransformerKind"/> or <see cref="LanguageModelKind"/>),
/// <see cref="ConfigKey"/> (the configuration as JSON with PyTorch's names) and any extra
/// entries the caller adds. Buffers (positional encodings) and gradients are not stored.
/// </summary>
public static class StateDict
{
    /// <summary>Metadata key of the format name.</summary>
    public const string FormatKey = "format";

    /// <summary>Metadata key of the format version.</summary>
    public const string FormatVersionKey = "format_version";

    /// <summary>Metadata key of the model kind.</summary>
    public const string ModelKey = "model";

    /// <summary>Metadata key of the configuration JSON.</summary>
    public const string ConfigKey = "config";

    /// <summary>The value of <see cref="FormatKey"/> in files this class writes.</summary>
    public const string Format = "gpu-transformer-state-dict";

    /// <summary>The version this class writes and the newest it reads.</summary>
    public const int FormatVersion = 1;

    /// <summary>Model kind of the encoder–decoder Transformer (<see cref="TransformerConfig"/>).</summary>
    public const string TransformerKind = "transformer";

    /// <summary>Model kind of the decoder-only language model (<see cref="LanguageModelConfig"/>).</summary>
    public const string LanguageModelKind = "language_model";

    private const int ListedPerProblem = 8;

    /// <summary>
    /// Writes every parameter of <paramref name="module"/> (F32, named <paramref name="prefix"/> +
    /// <see cref="Parameter.Name"/>) to <paramref name="path"/> atomically: the file is written
    /// next to the target and renamed over it, so a failed save leaves a previous file intact.
    /// Waits for the device to read the values.
    /// </summary>
    /// <param name="module">The model (or any module).</param>
    /// <param name="path">The file to write.</param>
    /// <param name="modelKind">Stored under <see cref="ModelKey"/>.</param>
    /// <param name="configJson">Stored under <see cref="ConfigKey"/>.</param>
    /// <param name="extraMetadata">More metadata (e.g. the training step); may not use the keys above.</param>
    /// <param name="prefix">Prepended to every name (a trailing dot is implied), for a PyTorch model that wraps ours.</param>
    /// <exception cref="ArgumentException">An extra metadata key is reserved.</exception>
    /// <exception cref="InvalidOperationException">Two parameters of the module share a name.</exception>
    public static void Save(Module module, string path, string modelKind, string configJson, IReadOnlyDictionary<string, string>? extraMetadata = null, string prefix = "")
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(modelKind);
        ArgumentNullException.ThrowIfNull(configJson);
        var parameters = UniquelyNamed(module);
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [FormatKey] = Format,
            [FormatVersionKey] = FormatVersion.ToString(CultureInfo.InvariantCulture),
            [ModelKey] = modelKind,
            [ConfigKey] = configJson,
        };
        foreach (var (key, value) in extraMetadata ?? new Dictionary<string, string>())
        {
            if (!metadata.TryAdd(key, value))
                throw new ArgumentException($"Metadata key '{key}' is reserved for the state dict itself.", nameof(extraMetadata));
        }
        var fullPrefix = NormalizedPrefix(prefix);
        var tensors = parameters.Select(p => SafeTensor.FromFloats(fullPrefix + p.Name, [.. p.Shape], p.Value.ToArray())).ToList();
        SafeTensors.Write(path, tensors, metadata);
    }

    /// <summary>Reads <paramref name="path"/> and loads it into <paramref name="module"/>; returns the file (for its metadata).</summary>
    /// <inheritdoc cref="Load(Module, SafeTensorFile, StateDictLoadOptions?)"/>
    public static SafeTensorFile Load(Module module, string path, StateDictLoadOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        var file = SafeTensors.Read(path);
        Load(module, file, options);
        return file;
    }

    /// <summary>
    /// Copies the file's tensors into the parameters of <paramref name="module"/> with the same
    /// names. Everything is checked before anything is copied, so a refused file leaves the
    /// module as it was: every parameter must be present, no other tensor may be (unless
    /// <see cref="StateDictLoadOptions.IgnoreExtraTensors"/>), shapes must be equal, and the
    /// dtype must be F32 or F64 (rounded to float32). One exception lists every problem.
    /// Gradients are left alone.
    /// </summary>
    /// <exception cref="InvalidDataException">
    /// The file does not match the model (the message names each missing, extra, misshapen or
    /// mistyped tensor with the shapes), or it was written by a newer format version.
    /// <see cref="SafeTensors.Read(string)"/> also raises it for a truncated or malformed file.
    /// </exception>
    /// <exception cref="InvalidOperationException">Two parameters of the module share a name.</exception>
    public static void Load(Module module, SafeTensorFile file, StateDictLoadOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentNullException.ThrowIfNull(file);
        options ??= new StateDictLoadOptions();
        CheckVersion(file);
        var prefix = NormalizedPrefix(options.Prefix);
        var parameters = UniquelyNamed(module);

        var missing = new List<string>();
        var misshapen = new List<string>();
        var mistyped = new List<string>();
        var sources = new List<(Parameter Parameter, SafeTensor Tensor)>();
        foreach (var parameter in parameters)
        {
            var name = prefix + parameter.Name;
            if (!file.Tensors.TryGetValue(name, out var tensor))
            {
                missing.Add($"{name} {Tensor<float>.Describe(parameter.Shape)}");
                continue;
            }
            if (!tensor.Shape.AsSpan().SequenceEqual([.. parameter.Shape]))
                misshapen.Add($"{name}: file {Tensor<float>.Describe(tensor.Shape)}, model {Tensor<float>.Describe(parameter.Shape)}");
            else if (tensor.Type is not (SafeTensorType.F32 or SafeTensorType.F64))
                mistyped.Add($"{name} is {tensor.Type}");
            else
                sources.Add((parameter, tensor));
        }
        var known = parameters.Select(p => prefix + p.Name).ToHashSet(StringComparer.Ordinal);
        var extra = options.IgnoreExtraTensors
            ? []
            : file.Tensors.Keys.Where(n => !known.Contains(n)).Order(StringComparer.Ordinal).ToList();

        if (missing.Count + misshapen.Count + mistyped.Count + extra.Count > 0)
        {
            var message = new StringBuilder($"'{file.Source}' does not match the model's parameters");
            if (prefix.Length > 0)
                message.Append(CultureInfo.InvariantCulture, $" (names prefixed with '{prefix}')");
            message.Append(':');
            Describe(message, "missing tensors", missing);
            Describe(message, "tensors the model does not have (ignore them with IgnoreExtraTensors)", extra);
            Describe(message, "shapes differ", misshapen);
            Describe(message, "parameters must be F32 (or F64, rounded)", mistyped);
            throw new InvalidDataException(message.ToString().TrimEnd(';') + ".");
        }
        foreach (var (parameter, tensor) in sources)
            parameter.Value.CopyFrom(tensor.ToFloats());
    }

    /// <summary>The model kind in the file's metadata.</summary>
    /// <exception cref="InvalidDataException">The metadata has no <see cref="ModelKey"/>.</exception>
    public static string ModelKind(SafeTensorFile file)
    {
        ArgumentNullException.ThrowIfNull(file);
        return file.Metadata.TryGetValue(ModelKey, out var kind)
            ? kind
            : throw new InvalidDataException($"'{file.Source}' has no '{ModelKey}' entry in its metadata, so the model it holds is unknown.");
    }

    /// <summary>The configuration of the model the file holds, whichever kind it is (the one place a kind names a config type).</summary>
    /// <exception cref="InvalidDataException">No or an unknown model kind, or a config that is missing, malformed or inconsistent.</exception>
    public static IModelConfig ReadConfig(SafeTensorFile file) => ModelKind(file) switch
    {
        TransformerKind => ReadTransformerConfig(file),
        LanguageModelKind => ReadLanguageModelConfig(file),
        var kind => throw new InvalidDataException($"'{file.Source}' holds a '{kind}' model; known kinds are {TransformerKind} and {LanguageModelKind}."),
    };

    /// <summary>
    /// The model the file describes (<see cref="ReadConfig"/>), built on <paramref name="device"/>
    /// with the file's weights (<see cref="Load(Module, SafeTensorFile, StateDictLoadOptions?)"/>).
    /// </summary>
    /// <exception cref="InvalidDataException">The config is unusable or the weights do not match it (the message names each tensor).</exception>
    public static IModel LoadModel(ComputeDevice device, SafeTensorFile file, StateDictLoadOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(device);
        var model = ReadConfig(file).CreateModel(device);
        try
        {
            model.LoadStateDict(file, options);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>The configuration of the encoder–decoder Transformer the file holds.</summary>
    /// <exception cref="InvalidDataException">The file holds another kind of model, or its config is missing, malformed or inconsistent.</exception>
    public static TransformerConfig ReadTransformerConfig(SafeTensorFile file) =>
        ReadTypedConfig(file, TransformerKind, TransformerConfig.FromJson);

    /// <summary>The configuration of the language model the file holds.</summary>
    /// <exception cref="InvalidDataException">The file holds another kind of model, or its config is missing, malformed or inconsistent.</exception>
    public static LanguageModelConfig ReadLanguageModelConfig(SafeTensorFile file) =>
        ReadTypedConfig(file, LanguageModelKind, LanguageModelConfig.FromJson);

    private static T ReadTypedConfig<T>(SafeTensorFile file, string kind, Func<string, T> parse)
    {
        var actual = ModelKind(file);
        if (actual != kind)
            throw new InvalidDataException($"'{file.Source}' holds a '{actual}' model, not a '{kind}'.");
        if (!file.Metadata.TryGetValue(ConfigKey, out var json))
            throw new InvalidDataException($"'{file.Source}' has no '{ConfigKey}' entry in its metadata.");
        try
        {
            return parse(json);
        }
        catch (Exception e) when (e is ArgumentException or InvalidDataException)
        {
            throw new InvalidDataException($"'{file.Source}' has an unusable config: {e.Message}", e);
        }
    }

    private static void CheckVersion(SafeTensorFile file)
    {
        // Files from other tools may carry their own "format" (safetensors.torch writes "pt"); only ours are versioned.
        if (!file.Metadata.TryGetValue(FormatKey, out var format) || format != Format)
            return;
        if (!file.Metadata.TryGetValue(FormatVersionKey, out var text)
            || !int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var version) || version < 1)
            throw new InvalidDataException($"'{file.Source}' is a {Format} file with an invalid {FormatVersionKey} '{text}'.");
        if (version > FormatVersion)
            throw new InvalidDataException($"'{file.Source}' has {FormatVersionKey} {version}; this version of GpuTransformer reads up to {FormatVersion}.");
    }

    private static List<Parameter> UniquelyNamed(Module module)
    {
        var parameters = module.Parameters().ToList();
        var duplicate = parameters.GroupBy(p => p.Name, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null)
            throw new InvalidOperationException($"The module has {duplicate.Count()} parameters named '{duplicate.Key}'; state dict names must be unique.");
        return parameters;
    }

    private static string NormalizedPrefix(string prefix)
    {
        ArgumentNullException.ThrowIfNull(prefix);
        return prefix.Length == 0 || prefix.EndsWith('.') ? prefix : prefix + ".";
    }

    private static void Describe(StringBuilder message, string problem, List<string> items)
    {
        if (items.Count == 0)
            return;
        message.Append(CultureInfo.InvariantCulture, $" {problem}: {string.Join(", ", items.Take(ListedPerProblem))}");
        if (items.Count > ListedPerProblem)
            message.Append(CultureInfo.InvariantCulture, $" and {items.Count - ListedPerProblem} more");
        message.Append(';');
    }
}
