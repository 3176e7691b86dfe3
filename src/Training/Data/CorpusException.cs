namespace GpuTransformer.Training.Data;

/// <summary>
/// A corpus cannot be read: missing path, empty or binary file, no text files in a folder,
/// a failed download. The message names the path and the problem and is meant to be shown
/// to the user as it is (one line, no stack trace).
/// </summary>
public sealed class CorpusException : Exception
{
    /// <inheritdoc/>
    public CorpusException()
    {
    }

    /// <inheritdoc/>
    public CorpusException(string message)
        : base(message)
    {
    }

    /// <inheritdoc/>
    public CorpusException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>A problem with <paramref name="path"/>; the message reads "<c>path: problem</c>".</summary>
    public CorpusException(string path, string problem, Exception? innerException = null)
        : base($"{path}: {problem}", innerException)
    {
        Path = path;
    }

    /// <summary>The file or folder at fault, when there is one.</summary>
    public string? Path { get; }
}
