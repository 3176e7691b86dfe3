using System.Buffers.Binary;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using GpuTransformer.Layers.IO;
using GpuTransformer.Layers;
using GpuTransformer.Training.Optimization;
using GpuTransformer.Training.Reporting;
using GpuTransformer.Training.Tokenizers;

namespace GpuTransformer.Training;

/// <summary>Where a training run is, apart from the weights and moments: what a checkpoint stores to resume exactly.</summary>
/// <param name="Step">Optimizer steps done.</param>
/// <param name="Tokens">Training target tokens seen.</param>
/// <param name="ElapsedSeconds">Wall time spent training so far (all sessions).</param>
/// <param name="RandomState">The model's dropout stream.</param>
/// <param name="DataState">The task's data position (<see cref="ITrainingTask.SaveDataState"/>).</param>
internal sealed record TrainerState(long Step, long Tokens, double ElapsedSeconds, DropoutState RandomState, string DataState);

/// <summary>A checkpoint refused because the model or optimizer state holds NaN or ±∞.</summary>
public sealed class NonFiniteStateException : InvalidOperationException
{
    /// <inheritdoc/>
    public NonFiniteStateException()
    {
    }

    /// <inheritdoc/>
    public NonFiniteStateException(string message)
        : base(message)
    {
    }

    /// <inheritdoc/>
    public NonFiniteStateException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>
/// A training checkpoint: ONE safetensors file, written atomically (a temporary file renamed over
/// the previous one, so a failed or interrupted write leaves the previous checkpoint intact).
/// <para>Tensors (F32): every model parameter under its PyTorch state_dict name (so
/// <see cref="StateDict.Load(Module, SafeTensorFile, StateDictLoadOptions?)"/> with
/// <c>IgnoreExtraTensors</c>, and PyTorch's <c>safetensors.torch.load_file</c>, read the weights), and
/// AdamW's moments as <c>optimizer.exp_avg.&lt;name&gt;</c> / <c>optimizer.exp_avg_sq.&lt;name&gt;</c>.</para>
/// <para>Metadata (strings): StateDict's <c>format</c>, <c>format_version</c>, <c>model</c>, <c>config</c>;
/// then <see cref="KindKey"/> = <see cref="Kind"/>, <see cref="VersionKey"/>, <see cref="StepKey"/>,
/// <see cref="TokensKey"/>, <see cref="ElapsedKey"/>, <see cref="OptimizerStepKey"/>,
/// <see cref="TrainingKey"/> (steps, accumulation, intervals, AdamW hyper-parameters, schedule as JSON),
/// <see cref="RandomStateKey"/> (dropout Philox seed and offset), <see cref="DataStateKey"/> (the batcher's
/// state), and from the task
/// <see cref="TokenizerKey"/> (the tokenizer's JSON), <see cref="TokenizerFingerprintKey"/>,
/// <see cref="CorpusKey"/> (<see cref="CorpusIdentity"/>) and <see cref="TaskKey"/> (batch shape, seeds),
/// from the trainer <see cref="RanksKey"/>, plus any extra entries of the caller (e.g. <c>preset</c>, <c>backend</c>).</para>
/// <para>Only what resuming needs: the metrics history lives in the run's <c>metrics.jsonl</c>
/// (<see cref="MetricsLogger"/>), so a save costs the same at step 10 as at step 10 million. Older
/// checkpoints that also hold <see cref="MetricsKey"/> load; the entry is ignored.</para>
/// <para><see cref="Read"/> checks the values, not only the format: every weight and moment finite
/// (an F64 one inside float's range), every <c>exp_avg_sq</c> ≥ 0, step, token and optimizer counts
/// ≥ 0, the elapsed time a finite number ≥ 0; the stored tokenizer must match its fingerprint.</para>
/// </summary>
public static class Checkpoint
{
    /// <summary>The file name of a run folder's checkpoint.</summary>
    public const string FileName = "checkpoint.safetensors";

    /// <summary>The value of <see cref="KindKey"/>.</summary>
    public const string Kind = "gpu-transformer-checkpoint";

    /// <summary>The checkpoint version written and the newest read.</summary>
    internal const int Version = 1;

    /// <summary>Metadata key: the file kind (a training checkpoint).</summary>
    internal const string KindKey = "checkpoint";
    /// <summary>Metadata key: the checkpoint format version.</summary>
    internal const string VersionKey = "checkpoint_version";
    /// <summary>Metadata key: optimizer steps done.</summary>
    internal const string StepKey = "step";
    /// <summary>Metadata key: training tokens seen.</summary>
    internal const string TokensKey = "tokens";
    /// <summary>Metadata key: training seconds so far.</summary>
    internal const string ElapsedKey = "elapsed_s";
    /// <summary>Metadata key: AdamW's step count (its bias correction).</summary>
    internal const string OptimizerStepKey = "optimizer_step";
    /// <summary>Metadata key: the trainer's options as JSON (steps, accumulation, intervals, AdamW, schedule).</summary>
    internal const string TrainingKey = "training";
    /// <summary>Metadata key: the dropout stream (seed, offset).</summary>
    internal const string RandomStateKey = "dropout_rng";
    /// <summary>Metadata key: the task's data position (its batcher state).</summary>
    internal const string DataStateKey = "data_state";
    /// <summary>Every metrics record as JSON lines, in checkpoints written before the history moved to <c>metrics.jsonl</c>: ignored.</summary>
    internal const string MetricsKey = "metrics";
    /// <summary>Metadata key: the tokenizer's JSON description.</summary>
    internal const string TokenizerKey = "tokenizer";
    /// <summary>Metadata key: the tokenizer's fingerprint.</summary>
    internal const string TokenizerFingerprintKey = "tokenizer_fingerprint";
    /// <summary>Metadata key: the corpus identity (what the run trained on).</summary>
    internal const string CorpusKey = "corpus";
    /// <summary>Metadata key: the task's batch shape and seeds.</summary>
    internal const string TaskKey = "task";

    /// <summary>How many data-parallel ranks wrote it (absent in older checkpoints: 1); a resume needs as many (<see cref="Distributed.DataParallel.RequireSameRanks"/>).</summary>
    internal const string RanksKey = "ranks";

    /// <summary>
    /// Writes the checkpoint of <paramref name="task"/>'s model, <paramref name="optimizer"/>'s
    /// moments and <paramref name="state"/> to <paramref name="path"/>. Checks every value first:
    /// a model or optimizer state with NaN or ±∞ is refused and the previous file is kept.
    /// </summary>
    /// <exception cref="NonFiniteStateException">A weight or moment is not finite (nothing written).</exception>
    /// <exception cref="IOException">The write failed (the previous file is intact).</exception>
    internal static void Save(string path, ITrainingTask task, AdamWOptimizer optimizer, TrainerOptions options, TrainerState state,
        IReadOnlyDictionary<string, string>? extraMetadata = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(task);
        ArgumentNullException.ThrowIfNull(optimizer);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(state);
        var tensors = task.Model.Parameters()
            .Select(p => SafeTensor.FromFloats(p.Name, [.. p.Shape], p.Value.ToArray()))
            .Concat(optimizer.StateTensors())
            .ToList();
        foreach (var tensor in tensors)
        {
            var values = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(tensor.Data);
            var bad = FirstNonFinite(values);
            if (bad >= 0)
                throw new NonFiniteStateException($"'{tensor.Name}' holds {values[bad]} at index {bad} at step {state.Step}; the checkpoint was not written.");
        }

        var c = CultureInfo.InvariantCulture;
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [StateDict.FormatKey] = StateDict.Format,
            [StateDict.FormatVersionKey] = StateDict.FormatVersion.ToString(c),
            [StateDict.ModelKey] = task.Model.Config.Kind,
            [StateDict.ConfigKey] = task.Model.Config.ToJson(),
            [KindKey] = Kind,
            [VersionKey] = Version.ToString(c),
            [StepKey] = state.Step.ToString(c),
            [TokensKey] = state.Tokens.ToString(c),
            [ElapsedKey] = state.ElapsedSeconds.ToString("R", c),
            [OptimizerStepKey] = optimizer.StepCount.ToString(c),
            [TrainingKey] = options.ToJson().ToJsonString(),
            [RandomStateKey] = new JsonObject
            {
                ["seed"] = state.RandomState.Seed.ToString(c),
                ["offset"] = state.RandomState.Offset.ToString(c),
            }.ToJsonString(),
            [DataStateKey] = state.DataState,
        };
        foreach (var (key, value) in task.Metadata().Concat(extraMetadata ?? new Dictionary<string, string>()))
        {
            if (!metadata.TryAdd(key, value))
                throw new ArgumentException($"Metadata key '{key}' is reserved for the checkpoint itself.", nameof(extraMetadata));
        }
        try
        {
            SafeTensors.Write(path, tensors, metadata);
        }
        catch (ArgumentOutOfRangeException e)
        {
            // .NET reports a file grown past the file system's or the process's size limit (EFBIG) this way.
            throw new IOException($"Writing the checkpoint '{path}' failed ({e.Message}); the previous checkpoint is intact.", e);
        }
    }

    /// <summary>Reads a checkpoint: a file, or a run folder holding <see cref="FileName"/>.</summary>
    /// <exception cref="FileNotFoundException">No checkpoint there.</exception>
    /// <exception cref="InvalidDataException">Not a GpuTransformer checkpoint, a newer version, or damaged (a value out of range: the message names the tensor or key).</exception>
    public static CheckpointFile Read(string pathOrFolder)
    {
        ArgumentNullException.ThrowIfNull(pathOrFolder);
        var path = Directory.Exists(pathOrFolder) ? Path.Combine(pathOrFolder, FileName) : pathOrFolder;
        if (!File.Exists(path))
            throw new FileNotFoundException($"No checkpoint at '{path}'.", path);
        var file = SafeTensors.Read(path);
        if (!file.Metadata.TryGetValue(KindKey, out var kind) || kind != Kind)
            throw new InvalidDataException($"'{path}' is not a GpuTransformer training checkpoint (no '{KindKey}: {Kind}' in its metadata); a plain state dict holds weights only.");
        var version = int.TryParse(file.Metadata.GetValueOrDefault(VersionKey), NumberStyles.None, CultureInfo.InvariantCulture, out var v) ? v : 0;
        if (version is < 1 or > Version)
            throw new InvalidDataException($"'{path}' has checkpoint version '{file.Metadata.GetValueOrDefault(VersionKey)}'; this build reads 1 to {Version}.");
        var checkpoint = new CheckpointFile(Path.GetFullPath(path), file);
        checkpoint.CheckValues();
        return checkpoint;
    }

    private static int FirstNonFinite(ReadOnlySpan<float> values)
    {
        for (var i = 0; i < values.Length; i++)
        {
            if (!float.IsFinite(values[i]))
                return i;
        }
        return -1;
    }
}

/// <summary>A checkpoint read by <see cref="Checkpoint.Read"/>: typed access to its metadata, and loading into a model and optimizer.</summary>
public sealed class CheckpointFile
{
    internal CheckpointFile(string path, SafeTensorFile file)
    {
        Path = path;
        File = file;
    }

    /// <summary>The file's full path.</summary>
    public string Path { get; }

    /// <summary>The raw tensors and metadata.</summary>
    public SafeTensorFile File { get; }

    /// <summary>Optimizer steps done.</summary>
    public long Step => Long(Checkpoint.StepKey);

    /// <summary>Training tokens seen.</summary>
    public long Tokens => Long(Checkpoint.TokensKey);

    /// <summary>Training wall time so far.</summary>
    public double ElapsedSeconds =>
        double.TryParse(Text(Checkpoint.ElapsedKey), NumberStyles.Float, CultureInfo.InvariantCulture, out var seconds) && double.IsFinite(seconds) && seconds >= 0
            ? seconds
            : throw new InvalidDataException($"Checkpoint '{Path}' has a malformed '{Checkpoint.ElapsedKey}': '{Text(Checkpoint.ElapsedKey)}' is not a finite number of seconds ≥ 0.");

    /// <summary>Data-parallel ranks of the run that wrote it (1 when <see cref="Checkpoint.RanksKey"/> is absent).</summary>
    public int Ranks => Metadata(Checkpoint.RanksKey) is null ? 1 : checked((int)Long(Checkpoint.RanksKey));

    /// <summary>AdamW's step count.</summary>
    public int OptimizerStep => checked((int)Long(Checkpoint.OptimizerStepKey));

    /// <summary>The model kind (<see cref="StateDict.LanguageModelKind"/>, <see cref="StateDict.TransformerKind"/>).</summary>
    public string ModelKind => StateDict.ModelKind(File);

    /// <summary>The language model's configuration.</summary>
    public LanguageModelConfig LanguageModelConfig() => StateDict.ReadLanguageModelConfig(File);

    /// <summary>The encoder–decoder's configuration.</summary>
    public TransformerConfig TransformerConfig() => StateDict.ReadTransformerConfig(File);

    /// <summary>The trainer options the run was started with (paths and time limit excepted).</summary>
    public TrainerOptions TrainerOptions() => Parse(Checkpoint.TrainingKey, json => Training.TrainerOptions.FromJson(JsonNode.Parse(json)!));

    /// <summary>Where the run was.</summary>
    internal TrainerState State() => new(
        Step, Tokens, ElapsedSeconds,
        Parse(Checkpoint.RandomStateKey, json =>
        {
            var node = JsonNode.Parse(json)!;
            return new DropoutState(
                ulong.Parse(node["seed"]!.GetValue<string>(), NumberStyles.None, CultureInfo.InvariantCulture),
                ulong.Parse(node["offset"]!.GetValue<string>(), NumberStyles.None, CultureInfo.InvariantCulture));
        }),
        Text(Checkpoint.DataStateKey));

    /// <summary>The tokenizer the model was trained with, checked against the stored fingerprint when there is one.</summary>
    /// <exception cref="InvalidDataException">Missing, malformed, or not the tokenizer its fingerprint names (a damaged or edited file).</exception>
    public ITokenizer Tokenizer()
    {
        var tokenizer = Parse(Checkpoint.TokenizerKey, TokenizerFactory.FromJson);
        if (Metadata(Checkpoint.TokenizerFingerprintKey) is { } stored && TokenizerFactory.Fingerprint(tokenizer) is var actual && actual != stored)
        {
            throw new InvalidDataException(
                $"Checkpoint '{Path}' has a '{Checkpoint.TokenizerKey}' whose fingerprint {actual[..12]}… is not the stored '{Checkpoint.TokenizerFingerprintKey}' {stored[..Math.Min(12, stored.Length)]}…: the file was damaged or edited.");
        }
        return tokenizer;
    }

    /// <summary>The checkpoint's tokenizer, after checking that it is <paramref name="requested"/> (when one is requested).</summary>
    /// <exception cref="TokenizerMismatchException">The checkpoint was trained with another tokenizer.</exception>
    public ITokenizer Tokenizer(ITokenizer? requested)
    {
        var tokenizer = Tokenizer();
        if (requested is not null)
            TokenizerFactory.EnsureSame(tokenizer, requested);
        return tokenizer;
    }

    /// <summary>Which corpus and split the run trained on.</summary>
    public CorpusIdentity Corpus() => Parse(Checkpoint.CorpusKey, CorpusIdentity.FromJson);

    /// <summary>A metadata entry, or null.</summary>
    public string? Metadata(string key) => File.Metadata.GetValueOrDefault(key);

    /// <summary>Copies the weights into <paramref name="model"/> (every parameter must be present with its shape; optimizer tensors are skipped).</summary>
    /// <exception cref="InvalidDataException">The checkpoint does not fit the model (names every problem).</exception>
    public void LoadModel(IModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        model.LoadStateDict(File, new StateDictLoadOptions { IgnoreExtraTensors = true });
    }

    /// <summary>Restores AdamW's moments and step count.</summary>
    /// <exception cref="InvalidDataException">A moment tensor is missing or misshapen.</exception>
    internal void LoadOptimizer(AdamWOptimizer optimizer)
    {
        ArgumentNullException.ThrowIfNull(optimizer);
        optimizer.LoadState(File, OptimizerStep);
    }

    /// <summary>
    /// Refuses values no run can produce: counts below zero, an elapsed time that is not a finite
    /// number ≥ 0, a weight or moment that is NaN or ±∞ (or an F64 one beyond float's range, which
    /// would load as ±∞), a negative second moment (AdamW would take its square root).
    /// </summary>
    internal void CheckValues()
    {
        foreach (var key in new[] { Checkpoint.StepKey, Checkpoint.TokensKey, Checkpoint.OptimizerStepKey })
        {
            if (File.Metadata.ContainsKey(key) && Long(key) < 0)
                throw new InvalidDataException($"Checkpoint '{Path}' has a negative '{key}': {Long(key)}.");
        }
        if (File.Metadata.ContainsKey(Checkpoint.ElapsedKey))
            _ = ElapsedSeconds;
        foreach (var tensor in File.Tensors.Values)
        {
            if (tensor.Type is not (SafeTensorType.F32 or SafeTensorType.F64))
                continue;
            var secondMoment = tensor.Name.StartsWith(AdamWOptimizer.SecondMomentPrefix, StringComparison.Ordinal);
            var count = (int)tensor.Count;
            for (var i = 0; i < count; i++)
            {
                var v = tensor.Type == SafeTensorType.F32
                    ? BinaryPrimitives.ReadSingleLittleEndian(tensor.Data.AsSpan(i * 4))
                    : BinaryPrimitives.ReadDoubleLittleEndian(tensor.Data.AsSpan(i * 8));
                var problem = !double.IsFinite(v) ? "a non-finite value"
                    : Math.Abs(v) > float.MaxValue ? "a value beyond float's range"
                    : secondMoment && v < 0 ? "a negative second moment"
                    : null;
                if (problem is not null)
                    throw new InvalidDataException(string.Create(CultureInfo.InvariantCulture, $"Checkpoint '{Path}': tensor '{tensor.Name}' holds {problem}, {v:R} at index {i}."));
            }
        }
    }

    private string Text(string key) =>
        File.Metadata.TryGetValue(key, out var value)
            ? value
            : throw new InvalidDataException($"Checkpoint '{Path}' has no '{key}' entry in its metadata.");

    private long Long(string key) =>
        long.TryParse(Text(key), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var value)
            ? value
            : throw new InvalidDataException($"Checkpoint '{Path}' has a malformed '{key}': '{Text(key)}'.");

    private T Parse<T>(string key, Func<string, T> parse)
    {
        var text = Text(key);
        try
        {
            return parse(text);
        }
        catch (Exception e) when (e is JsonException or FormatException or InvalidOperationException or NullReferenceException or OverflowException or KeyNotFoundException or ArgumentException)
        {
            throw new InvalidDataException($"Checkpoint '{Path}' has a malformed '{key}': {e.Message}", e);
        }
    }
}
