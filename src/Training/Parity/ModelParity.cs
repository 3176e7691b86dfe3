using System.Globalization;
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Layers.IO;
using GpuTransformer.Layers;
using GpuTransformer.Training.Optimization;

namespace GpuTransformer.Training.Parity;

/// <summary>
/// Either model (<see cref="LanguageModel"/> or <see cref="Transformer"/>) behind one interface
/// for checks against PyTorch: loaded from a checkpoint whose metadata names the model and its
/// config (<see cref="StateDict"/>'s format, which the parity golden files and
/// <c>scripts/parity/export_pytorch.py</c> also write), run on a <see cref="ParityBatch"/> for
/// logits, loss and gradients, or trained for a few AdamW steps. Dropout is off
/// (<see cref="Module.Training"/> false), so a run is deterministic and matches PyTorch's
/// <c>model.eval()</c> or dropout 0.
/// </summary>
public sealed class ParityModel : IDisposable
{
    private readonly LanguageModel? languageModel;
    private readonly Transformer? transformer;

    /// <summary>Wraps a language model (not owned unless <paramref name="owned"/>).</summary>
    public ParityModel(LanguageModel model, bool owned = false)
    {
        ArgumentNullException.ThrowIfNull(model);
        languageModel = model;
        (Module, Kind, ConfigJson, Owned) = (model, StateDict.LanguageModelKind, model.Config.ToJson(), owned);
        Module.Training = false;
    }

    /// <summary>Wraps an encoder–decoder Transformer (not owned unless <paramref name="owned"/>).</summary>
    public ParityModel(Transformer model, bool owned = false)
    {
        ArgumentNullException.ThrowIfNull(model);
        transformer = model;
        (Module, Kind, ConfigJson, Owned) = (model, StateDict.TransformerKind, model.Config.ToJson(), owned);
        Module.Training = false;
    }

    /// <summary>The model.</summary>
    public Module Module { get; }

    /// <summary><see cref="StateDict.LanguageModelKind"/> or <see cref="StateDict.TransformerKind"/>.</summary>
    public string Kind { get; }

    /// <summary>The configuration as JSON with PyTorch's names.</summary>
    public string ConfigJson { get; }

    /// <summary>Tensors of the checkpoint that are not parameters (a golden file's batch and outputs, optimizer state); 0 unless loaded.</summary>
    public int IgnoredTensors { get; private set; }

    private bool Owned { get; }

    /// <summary>
    /// Builds the model the checkpoint's metadata describes and loads its weights, named
    /// <paramref name="prefix"/> + state_dict name (tensors that are not parameters are ignored
    /// and counted in <see cref="IgnoredTensors"/>).
    /// </summary>
    /// <exception cref="InvalidDataException">No model kind or config in the metadata, an inconsistent config, or weights that do not match it (the message names each tensor).</exception>
    public static ParityModel Load(ComputeDevice device, SafeTensorFile checkpoint, string prefix = "")
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(checkpoint);
        var kind = StateDict.ModelKind(checkpoint);
        ParityModel model = kind switch
        {
            StateDict.LanguageModelKind => new ParityModel(new LanguageModel(device, StateDict.ReadLanguageModelConfig(checkpoint)), owned: true),
            StateDict.TransformerKind => new ParityModel(new Transformer(device, StateDict.ReadTransformerConfig(checkpoint)), owned: true),
            _ => throw new InvalidDataException($"'{checkpoint.Source}' holds a '{kind}' model; known kinds are {StateDict.TransformerKind} and {StateDict.LanguageModelKind}."),
        };
        try
        {
            StateDict.Load(model.Module, checkpoint, new StateDictLoadOptions { Prefix = prefix, IgnoreExtraTensors = true });
            var normalized = prefix.Length == 0 || prefix.EndsWith('.') ? prefix : prefix + ".";
            var names = model.Module.Parameters().Select(p => normalized + p.Name).ToHashSet(StringComparer.Ordinal);
            model.IgnoredTensors = checkpoint.Tensors.Keys.Count(n => !names.Contains(n));
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Checks <paramref name="batch"/> against the model before anything runs: the kind, every id
    /// in its vocabulary (targets may be pad_id), sequences no longer than max_seq_len, and at
    /// least one target that is not pad_id (else the mean loss is undefined).
    /// </summary>
    /// <exception cref="InvalidDataException">The first problem, naming the tensor, the id and its position.</exception>
    public void Validate(ParityBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        if (batch.Kind != Kind)
            throw new InvalidDataException($"'{batch.Source}' is a {batch.Kind} batch but the model is a {Kind}.");
        var (maxLength, padId) = languageModel is { } lm ? (lm.Config.MaxSequenceLength, lm.Config.PadId) : (transformer!.Config.MaxSequenceLength, transformer.Config.PadId);
        foreach (var (name, ids) in batch.Tensors)
        {
            var isTarget = name is "targets" or "tgt_out";
            var vocabulary = languageModel?.Config.VocabularySize ?? (name == "src" ? transformer!.Config.SourceVocabularySize : transformer!.Config.TargetVocabularySize);
            Rethrow(batch, () =>
            {
                ids.RequireLengthAtMost(maxLength, name);
                ids.RequireInVocabulary(vocabulary, name, isTarget && padId >= 0 ? padId : null);
            });
            if (isTarget && padId >= 0 && !ids.Span.ContainsAnyExcept(padId))
                throw new InvalidDataException($"'{batch.Source}': every target in {name} is pad_id {padId}, so the mean loss is undefined.");
        }
    }

    /// <summary>
    /// One forward, loss and backward on <paramref name="batch"/> from zeroed gradients: the
    /// logits (read before the loss overwrites them with their gradient), the loss and every
    /// parameter's gradient under <c>grad.</c> + state_dict name.
    /// </summary>
    /// <exception cref="InvalidDataException">The batch does not fit the model (<see cref="Validate"/>).</exception>
    public ParityResult Run(ParityBatch batch)
    {
        Validate(batch);
        Module.ZeroGradients();
        var logits = Forward(batch);
        var (shape, values) = (logits.Shape.ToArray(), logits.ToArray());
        var loss = LossAndBackward(batch);
        return new ParityResult(shape, values, loss,
            [.. Module.Parameters().Select(p => new ParityTensor(ParityResult.GradientPrefix + p.Name, [.. p.Shape], p.Gradient.ToArray()))]);
    }

    /// <summary>
    /// <paramref name="steps"/> AdamW steps on the same batch (zero gradients, forward, loss,
    /// backward, update), as the golden files' <c>losses</c> were made; returns the loss of each
    /// step, computed before its update. Changes the weights.
    /// </summary>
    public float[] Train(ParityBatch batch, AdamWOptions options, double learningRate, int steps)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(steps);
        Validate(batch);
        using var optimizer = new AdamWOptimizer(Module.Parameters(), options);
        var losses = new float[steps];
        for (var step = 0; step < steps; step++)
        {
            Module.ZeroGradients();
            Forward(batch);
            losses[step] = LossAndBackward(batch);
            optimizer.Step(learningRate);
        }
        return losses;
    }

    /// <summary>The AdamW hyper-parameters a golden file's metadata records (<c>lr</c>, <c>beta1</c>, <c>beta2</c>, <c>eps</c>, <c>weight_decay</c>).</summary>
    /// <exception cref="InvalidDataException">A value is missing or not a number.</exception>
    public static (AdamWOptions Options, double LearningRate) OptimizerSettings(SafeTensorFile golden)
    {
        ArgumentNullException.ThrowIfNull(golden);
        double Meta(string key) =>
            golden.Metadata.TryGetValue(key, out var text) && double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var value)
                ? value
                : throw new InvalidDataException($"'{golden.Source}' has no numeric '{key}' in its metadata (the AdamW settings of its losses).");
        var options = new AdamWOptions { Beta1 = Meta("beta1"), Beta2 = Meta("beta2"), Epsilon = Meta("eps"), WeightDecay = Meta("weight_decay") };
        return (options, Meta("lr"));
    }

    public void Dispose()
    {
        if (Owned)
            Module.Dispose();
    }

    private Tensor<float> Forward(ParityBatch batch) => languageModel is { } lm
        ? lm.Forward(batch["ids"])
        : transformer!.Forward(batch["src"], batch["tgt_in"]);

    private float LossAndBackward(ParityBatch batch)
    {
        if (languageModel is { } lm)
        {
            var loss = lm.Loss(batch["targets"]);
            lm.Backward(lm.LossFunction.Backward());
            return loss;
        }
        var value = transformer!.Loss(batch["tgt_out"]);
        transformer.Backward(transformer.LossFunction.Backward());
        return value;
    }

    private static void Rethrow(ParityBatch batch, Action check)
    {
        try
        {
            check();
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"'{batch.Source}': {e.Message.Split(" (Parameter", 2)[0]}", e);
        }
    }
}
