using System.Diagnostics.CodeAnalysis;
using GpuTransformer.Kernels.Backends;
using ILGPU;

namespace GpuTransformer.Training.Distributed;

/// <summary>
/// The processes ("ranks") of one data-parallel job and the collectives they run together:
/// all-reduce (sum), broadcast, all-gather, barrier — the few operations data parallelism needs
/// (llm.c, PyTorch DDP). Three implementations: <see cref="SingleProcessCommunicator"/> (one rank,
/// every collective free), <see cref="MpiCommunicator"/> (Open MPI, host buffers) and
/// <see cref="NcclCommunicator"/> (NCCL, CUDA device buffers); <see cref="Communicators.Create(CommunicatorOptions?, ComputeDevice?)"/>
/// picks one.
/// <para>
/// A collective is entered by every rank, in the same order, with buffers of the same length;
/// with <see cref="CommunicatorOptions.CheckLengths"/> a length that differs between ranks is a
/// <see cref="CommunicatorException"/> on every rank rather than a hang or garbage.
/// </para>
/// <para>
/// Failure: a rank that dies (killed, crashed, exited) makes the MPI launcher end the others
/// within seconds (tested). Disposing a communicator while an exception propagates does not
/// wait for the other ranks (they may sit inside a collective forever): the process leaves with
/// its exception and the launcher ends the job. <see cref="Abort"/> ends the job on purpose.
/// </para>
/// </summary>
public interface ICommunicator : IDisposable
{
    /// <summary>This process's rank, 0 ≤ rank &lt; <see cref="Size"/>.</summary>
    int Rank { get; }

    /// <summary>Number of ranks in the job.</summary>
    int Size { get; }

    /// <summary>What this is, for progress lines: e.g. "MPI (Open MPI v4.1.4), rank 0 of 2".</summary>
    string Description { get; }

    /// <summary>
    /// Replaces <paramref name="values"/> on every rank with the element-wise sum over the ranks.
    /// Host memory: MPI reduces here; NCCL passes it to its bootstrap communicator.
    /// </summary>
    void AllReduceSum(Span<float> values);

    /// <summary>
    /// The same on a device buffer: after the work already queued on <paramref name="device"/>'s
    /// stream, and visible to the work queued after. NCCL reduces on the device (asynchronously,
    /// like a kernel launch); MPI copies through host memory and returns when done.
    /// </summary>
    void AllReduceSum(ArrayView<float> values, ComputeDevice device);

    /// <summary>Copies <paramref name="values"/> of rank <paramref name="root"/> to every rank (host memory).</summary>
    void Broadcast<T>(Span<T> values, int root)
        where T : unmanaged;

    /// <summary>Copies the device buffer of rank <paramref name="root"/> to every rank, ordered on <paramref name="device"/>'s stream.</summary>
    void Broadcast(ArrayView<float> values, int root, ComputeDevice device);

    /// <summary>
    /// Every rank's <paramref name="mine"/>, concatenated in rank order into <paramref name="all"/>
    /// ([Size × mine.Length], host memory). Lengths are not checked across ranks: the check itself
    /// is an all-gather.
    /// </summary>
    void AllGather<T>(ReadOnlySpan<T> mine, Span<T> all)
        where T : unmanaged;

    /// <summary>Returns when every rank has entered it.</summary>
    void Barrier();

    /// <summary>
    /// Ends every rank of the job now: prints "rank r/N: <paramref name="reason"/>" to stderr and
    /// stops this process and, through the launcher, the others. Does not return.
    /// </summary>
    [DoesNotReturn]
    void Abort(string reason);
}
