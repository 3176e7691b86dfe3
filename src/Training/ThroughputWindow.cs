namespace GpuTransformer.Training;

/// <summary>
/// Tokens per second over the last <c>capacity</c> optimizer steps: a moving window, so the slow
/// first steps (kernel compilation) fade out of the figure the progress display and metrics show.
/// </summary>
internal sealed class ThroughputWindow
{
    private readonly Queue<(long Tokens, double Seconds)> steps = new();
    private readonly int capacity;

    /// <param name="capacity">Steps in the window (≥ 1).</param>
    public ThroughputWindow(int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(capacity);
        this.capacity = capacity;
    }

    /// <summary>Tokens per second over the window (0 before any time has passed).</summary>
    public double TokensPerSecond
    {
        get
        {
            var seconds = steps.Sum(s => s.Seconds);
            return seconds > 0 ? steps.Sum(s => s.Tokens) / seconds : 0;
        }
    }

    /// <summary>Adds a step of <paramref name="tokens"/> tokens that took <paramref name="seconds"/>, dropping the oldest beyond the capacity.</summary>
    public void Add(long tokens, double seconds)
    {
        steps.Enqueue((tokens, seconds));
        if (steps.Count > capacity)
            steps.Dequeue();
    }
}
