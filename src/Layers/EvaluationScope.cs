namespace GpuTransformer.Layers;

/// <summary>
/// Evaluation mode (dropout off) for the life of a <c>using</c>: <c>using (model.EvaluationMode()) { … }</c>.
/// Disposing restores the mode the module had when the scope began, so scopes nest and a model
/// that was already in evaluation mode stays there.
/// </summary>
public sealed class EvaluationScope : IDisposable
{
    private readonly Module module;
    private readonly bool previous;

    internal EvaluationScope(Module module)
    {
        this.module = module;
        previous = module.Training;
        module.Training = false;
    }

    /// <summary>Restores the mode the module had before the scope.</summary>
    public void Dispose() => module.Training = previous;
}
