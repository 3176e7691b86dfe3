namespace GpuTransformer.Kernels.Reference;

/// <summary>
/// Plain C# twin of <see cref="AdamWKernels"/>: <c>torch.optim.AdamW</c>'s update in double,
/// state rounded to float after each step (as the device stores it).
/// </summary>
public static class AdamWReference
{
    /// <summary>One update of parameters, first and second moment in place; g = gradients · gradScale.</summary>
    public static void Step(Span<float> parameters, Span<float> firstMoment, Span<float> secondMoment, ReadOnlySpan<float> gradients, AdamWStep hyper, double gradScale = 1)
    {
        var biasCorrection1 = 1 - Math.Pow(hyper.Beta1, hyper.Step);
        var biasCorrection2 = 1 - Math.Pow(hyper.Beta2, hyper.Step);
        for (var i = 0; i < parameters.Length; i++)
        {
            var g = gradients[i] * gradScale;
            var p = parameters[i] * (1 - hyper.LearningRate * hyper.WeightDecay);
            var m = hyper.Beta1 * firstMoment[i] + (1 - hyper.Beta1) * g;
            var v = hyper.Beta2 * secondMoment[i] + (1 - hyper.Beta2) * g * g;
            p -= hyper.LearningRate * (m / biasCorrection1) / (Math.Sqrt(v / biasCorrection2) + hyper.Epsilon);
            parameters[i] = (float)p;
            firstMoment[i] = (float)m;
            secondMoment[i] = (float)v;
        }
    }
}
