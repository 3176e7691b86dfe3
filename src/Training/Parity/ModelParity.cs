using System.Globalization;
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Layers.IO;
using GpuTransformer.Layers;
using GpuTransformer.Training.Optimization;

namespace GpuTransformer.Training.Parity;

/// <summary>
/// Checks of a model against PyTorch, for either model through <see cref="IModel"/>: loaded from
/// a checkpoint whose metadata names the model and its config (<see cref="StateDict"/>'s format,
/// which the parity golden files and <c>scripts/parity/export_pytorch.py</c> also write), run on a
/// <see cref="ParityBatch"/> for logits, loss and gradients, or trained for a few AdamW steps.
/// Runs switch the model to evaluation mode (dropout off), so they are deterministic and match
/// PyTorch's <c>model.eval()</c> or dropout 0.
/// </summary>
public static class ModelParity
{
    /// <summary>
    /// Builds the model the checkpoint's metadata describes and loads its weights, named
    /// <paramref name="prefix"/> + state_dict name; tensors that are not parameters (a golden
    /// file's batch and outputs, optimizer state) are skipped (<see cref="IgnoredTensors"/> counts them).
    /// </summary>
    /// <exception cref="InvalidDataException">No model kind or config in the metadata, an inconsistent config, or weights that do not match it (the message names each tensor).</exception>
    public static IModel Load(ComputeDevice device, SafeTensorFile checkpoint, string prefix = "") =>
        StateDict.LoadModel(device, checkpoint, new StateDictLoadOptions { Prefix = prefix, IgnoreExtraTensors = true });

    /// <summary>Tensors of <paramref name="checkpoint"/> that are not parameters of <paramref name="model"/> under <paramref name="prefix"/>.</summary>
    public static int IgnoredTensors(IModel model, SafeTensorFile checkpoint, string prefix = "")
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(checkpoint);
        var normalized = prefix.Length == 0 || prefix.EndsWith('.') ? prefix : prefix + ".";
        var names = model.Parameters().Select(p => normalized + p.Name).ToHashSet(StringComparer.Ordinal);
        return checkpoint.Tensors.Keys.Count(n => !names.Contains(n));
    }

    /// <summary>
    /// Checks <paramref name="batch"/> against the model before anything runs: the kind, every id
    /// in its vocabulary (targets may be pad_id), sequences no longer than max_seq_len
    /// (<see cref="IModel.Validate"/>), and at least one target that is not pad_id (else the mean
    /// loss is undefined).
    /// </summary>
    /// <exception cref="InvalidDataException">The first problem, naming the tensor, the id and its position.</exception>
    public static void Validate(IModel model, ParityBatch batch)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(batch);
        if (batch.Kind != model.Config.Kind)
            throw new InvalidDataException($"'{batch.Source}' is a {batch.Kind} batch but the model is a {model.Config.Kind}.");
        try
        {
            model.Validate(batch.ToModelBatch());
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"'{batch.Source}': {e.Message.Split(" (Parameter", 2)[0]}", e);
        }
        var (name, targets) = batch.Tensors.Last();
        var padId = model.Config.PadId;
        if (padId >= 0 && !targets.Span.ContainsAnyExcept(padId))
            throw new InvalidDataException($"'{batch.Source}': every target in {name} is pad_id {padId}, so the mean loss is undefined.");
    }

    /// <summary>
    /// One forward, loss and backward on <paramref name="batch"/> from zeroed gradients: the
    /// logits (read before the loss overwrites them with their gradient), the loss and every
    /// parameter's gradient under <c>grad.</c> + state_dict name.
    /// </summary>
    /// <exception cref="InvalidDataException">The batch does not fit the model (<see cref="Validate"/>).</exception>
    public static ParityResult Run(IModel model, ParityBatch batch)
    {
        Validate(model, batch);
        var modelBatch = batch.ToModelBatch();
        model.Training = false;
        model.ZeroGradients();
        var logits = model.Forward(modelBatch);
        var (shape, values) = (logits.Shape.ToArray(), logits.ToArray());
        var loss = model.Loss(modelBatch.Targets);
        model.Backward(model.LossFunction.Backward());
        return new ParityResult(shape, values, loss,
            [.. model.Parameters().Select(p => new ParityTensor(ParityResult.GradientPrefix + p.Name, [.. p.Shape], p.Gradient.ToArray()))]);
    }

    /// <summary>
    /// <paramref name="steps"/> AdamW steps on the same batch (zero gradients,
    /// <see cref="IModel.TrainStep"/>, update), as the golden files' <c>losses</c> were made;
    /// returns the loss of each step, computed before its update. Changes the weights.
    /// </summary>
    public static float[] Train(IModel model, ParityBatch batch, AdamWOptions options, double learningRate, int steps)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(steps);
        Validate(model, batch);
        var modelBatch = batch.ToModelBatch();
        model.Training = false;
        using var optimizer = new AdamWOptimizer(model.Parameters(), options);
        var losses = new float[steps];
        for (var step = 0; step < steps; step++)
        {
            model.ZeroGradients();
            losses[step] = (float)model.TrainStep(modelBatch).Loss;
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
}
