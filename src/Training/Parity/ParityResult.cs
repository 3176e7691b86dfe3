using GpuTransformer.Layers.IO;

namespace GpuTransformer.Training.Parity;

/// <summary>One named float tensor of a parity run (row-major values).</summary>
public sealed record ParityTensor(string Name, int[] Shape, float[] Values);

/// <summary>
/// What one forward, loss and backward produced, under the names of the parity golden files:
/// <c>logits</c> [B, T, V], <c>loss</c> (a scalar, shape []) and <c>grad.&lt;state_dict name&gt;</c>
/// for every parameter, in the model's parameter order.
/// </summary>
/// <param name="LogitsShape">[B, T, V].</param>
/// <param name="Logits">The logits of the forward, row-major.</param>
/// <param name="Loss">The mean cross-entropy over targets that are not pad_id.</param>
/// <param name="Gradients">∂loss/∂parameter, named <see cref="GradientPrefix"/> + state_dict name.</param>
public sealed record ParityResult(int[] LogitsShape, float[] Logits, float Loss, IReadOnlyList<ParityTensor> Gradients)
{
    /// <summary>Name of the logits tensor.</summary>
    internal const string LogitsName = "logits";

    /// <summary>Name of the loss tensor.</summary>
    public const string LossName = "loss";

    /// <summary>Prefix of gradient tensors.</summary>
    internal const string GradientPrefix = "grad.";

    /// <summary>Logits, loss and gradients, in that order.</summary>
    public IEnumerable<ParityTensor> Tensors() =>
        Gradients.Prepend(new ParityTensor(LossName, [], [Loss])).Prepend(new ParityTensor(LogitsName, LogitsShape, Logits));

    /// <summary>The global L2 norm of all gradients (as <c>clip_grad_norm_</c> computes it).</summary>
    public double GradientNorm() => Math.Sqrt(Gradients.Sum(g => g.Values.Sum(v => (double)v * v)));

    /// <summary>Writes every tensor (F32) and <paramref name="metadata"/> to <paramref name="path"/> atomically.</summary>
    public void Save(string path, IReadOnlyDictionary<string, string>? metadata = null) =>
        SafeTensors.Write(path, Tensors().Select(t => SafeTensor.FromFloats(t.Name, t.Shape, t.Values)), metadata);
}
