using System.Diagnostics.CodeAnalysis;
using GpuTransformer.Kernels.Backends;
using ILGPU;

namespace GpuTransformer.Training.Distributed;

/// <summary>
/// One rank, what runs without a launcher: every collective is free (the sum over one rank is
/// the buffer itself), so a training loop written against <see cref="ICommunicator"/> costs
/// nothing in a single process. Arguments are still checked.
/// </summary>
public sealed class SingleProcessCommunicator : ICommunicator
{
    /// <inheritdoc/>
    public int Rank => 0;

    /// <inheritdoc/>
    public int Size => 1;

    /// <inheritdoc/>
    public string Description => "single process";

    /// <inheritdoc/>
    public void AllReduceSum(Span<float> values)
    {
    }

    /// <inheritdoc/>
    public void AllReduceSum(ArrayView<float> values, ComputeDevice device) => ArgumentNullException.ThrowIfNull(device);

    /// <inheritdoc/>
    public void Broadcast<T>(Span<T> values, int root)
        where T : unmanaged => CollectiveRules.CheckRoot(root, Size);

    /// <inheritdoc/>
    public void Broadcast(ArrayView<float> values, int root, ComputeDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        CollectiveRules.CheckRoot(root, Size);
    }

    /// <inheritdoc/>
    public void AllGather<T>(ReadOnlySpan<T> mine, Span<T> all)
        where T : unmanaged
    {
        CollectiveRules.CheckAllGather(mine.Length, all.Length, Size);
        mine.CopyTo(all);
    }

    /// <inheritdoc/>
    public void Barrier()
    {
    }

    /// <summary>Prints the reason and ends the process (exit code 1), as an MPI job would end.</summary>
    [DoesNotReturn]
    public void Abort(string reason)
    {
        CollectiveRules.Announce(Rank, Size, reason);
        Environment.Exit(1);
        throw new InvalidOperationException("unreachable: Environment.Exit returned");
    }

    /// <inheritdoc/>
    public void Dispose()
    {
    }

    /// <inheritdoc/>
    public override string ToString() => Description;
}
