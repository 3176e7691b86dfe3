namespace GpuTransformer.Training.Distributed;

/// <summary>
/// A collective failed, the ranks disagree (buffer lengths, configs), or MPI/NCCL cannot be
/// loaded or started. The message names the rank, the call and the problem and is meant to be
/// shown to the user as it is (one line, no stack trace).
/// </summary>
public sealed class CommunicatorException : Exception
{
    /// <inheritdoc/>
    public CommunicatorException()
    {
    }

    /// <inheritdoc/>
    public CommunicatorException(string message)
        : base(message)
    {
    }

    /// <inheritdoc/>
    public CommunicatorException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
