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
    public int Rank => 0;

    public int Size => 1;

    public string Description => "single process";

    public void AllReduceSum(Span<float> values)
    {
    }

    public void AllReduceSum(ArrayView<float> values, ComputeDevice device) => ArgumentNullException.ThrowIfNull(device);

    public void Broadcast<T>(Span<T> values, int root)
        where T : unmanaged => CollectiveRules.CheckRoot(root, Size);

    public void Broadcast(ArrayView<float> values, int root, ComputeDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        CollectiveRules.CheckRoot(root, Size);
    }

    public void AllGather<T>(ReadOnlySpan<T> mine, Span<T> all)
        where T : unmanaged
    {
        CollectiveRules.CheckAllGather(mine.Length, all.Length, Size);
        mine.CopyTo(all);
    }

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

    public void Dispose()
    {
    }

    public override string ToString() => Description;
}
