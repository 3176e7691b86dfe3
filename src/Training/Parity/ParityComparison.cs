using GpuTransformer.Layers.IO;
using GpuTransformer.Layers;

namespace GpuTransformer.Training.Parity;

/// <summary>
/// How close a parity run must be to a reference (PyTorch's float64 golden files). For a tensor
/// with reference values b and our values a, both of n elements:
/// <code>max_i |a_i − b_i| ≤ Relative · max_i |b_i| + AbsoluteFloor</code>
/// — relative to the tensor's largest reference magnitude, not element by element (an element
/// that is zero in exact arithmetic, such as the key rows of an <c>in_proj_bias</c> gradient,
/// ~1e-17 in the goldens, gets float32 round-off from any float32 implementation). The floor only
/// matters for a tensor that is exactly zero. The loss: |a − b| ≤ <see cref="LossRelative"/> · |b|.
/// A NaN or infinity in a is always outside.
/// </summary>
/// <param name="Relative">For logits and gradients; 1e-4 by default.</param>
/// <param name="LossRelative">For the loss; 1e-5 by default.</param>
/// <param name="AbsoluteFloor">Added to every tensor's allowance; 1e-8 by default.</param>
public sealed record ParityTolerance(double Relative = 1e-4, double LossRelative = 1e-5, double AbsoluteFloor = 1e-8)
{
    /// <summary>The defaults: 1e-4 relative for logits and gradients, 1e-5 for the loss, floor 1e-8.</summary>
    public static ParityTolerance Default { get; } = new();
}

/// <summary>One tensor against its reference.</summary>
/// <param name="Name">Tensor name (<c>logits</c>, <c>loss</c>, <c>grad.…</c>).</param>
/// <param name="Shape">Its shape.</param>
/// <param name="MaxAbsDifference">max |a − b| (NaN when a holds a NaN or infinity).</param>
/// <param name="MaxAbsReference">max |b|.</param>
/// <param name="Allowed">The largest max |a − b| the tolerance allows.</param>
public sealed record TensorComparison(string Name, int[] Shape, double MaxAbsDifference, double MaxAbsReference, double Allowed)
{
    /// <summary>max |a − b| / max |b| (0 when both are 0, ∞ when only the reference is 0).</summary>
    public double RelativeDifference => MaxAbsReference > 0 ? MaxAbsDifference / MaxAbsReference
        : MaxAbsDifference == 0 ? 0 : double.PositiveInfinity;

    /// <summary>Whether the tensor is within tolerance.</summary>
    public bool Within => MaxAbsDifference <= Allowed; // false for NaN
}

/// <summary>Compares a <see cref="ParityResult"/> with a reference file (<see cref="ParityTolerance"/> defines "close").</summary>
public static class ParityComparison
{
    /// <summary>One tensor: <paramref name="actual"/> (a) against <paramref name="expected"/> (b) with allowance relative·max|b| + floor.</summary>
    public static TensorComparison Compare(string name, int[] shape, ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, double relative, double floor)
    {
        if (expected.Length != actual.Length)
            throw new ArgumentException($"{name}: {actual.Length} values against {expected.Length} reference values.", nameof(actual));
        double worst = 0, scale = 0;
        var finite = true;
        for (var i = 0; i < expected.Length; i++)
        {
            finite &= float.IsFinite(actual[i]);
            worst = Math.Max(worst, Math.Abs((double)actual[i] - expected[i]));
            scale = Math.Max(scale, Math.Abs((double)expected[i]));
        }
        worst = finite ? worst : double.NaN;
        return new TensorComparison(name, shape, worst, scale, (relative * scale) + floor);
    }

    /// <summary>
    /// Logits, loss and every gradient of <paramref name="result"/> against the tensors of the
    /// same names in <paramref name="reference"/> (a golden file, or another run's output), in
    /// the result's order.
    /// </summary>
    /// <exception cref="InvalidDataException">The reference lacks a tensor or has another shape (the message names it and both shapes).</exception>
    public static IReadOnlyList<TensorComparison> Compare(ParityResult result, SafeTensorFile reference, ParityTolerance? tolerance = null)
    {
        ArgumentNullException.ThrowIfNull(result);
        ArgumentNullException.ThrowIfNull(reference);
        tolerance ??= ParityTolerance.Default;
        var missing = result.Tensors().Select(t => t.Name).Where(n => !reference.Tensors.ContainsKey(n)).ToList();
        if (missing.Count > 0)
        {
            throw new InvalidDataException(
                $"'{reference.Source}' has no {string.Join(", ", missing.Take(4))}{(missing.Count > 4 ? $" and {missing.Count - 4} more" : "")} to compare with" +
                (missing.All(n => n.StartsWith(ParityResult.GradientPrefix, StringComparison.Ordinal)) ? " (is it for another model?)." : "."));
        }
        var comparisons = new List<TensorComparison>();
        foreach (var tensor in result.Tensors())
        {
            var expected = reference.Tensors[tensor.Name];
            if (expected.Count != tensor.Values.Length || (expected.Shape.Length > 0 && !expected.Shape.AsSpan().SequenceEqual(tensor.Shape)))
            {
                throw new InvalidDataException(
                    $"'{reference.Source}': {tensor.Name} has shape {Tensor<float>.Describe(expected.Shape)} but the run produced {Tensor<float>.Describe(tensor.Shape)}.");
            }
            var isLoss = tensor.Name == ParityResult.LossName;
            comparisons.Add(Compare(tensor.Name, tensor.Shape, expected.ToFloats(), tensor.Values,
                isLoss ? tolerance.LossRelative : tolerance.Relative, isLoss ? 0 : tolerance.AbsoluteFloor));
        }
        return comparisons;
    }
}
