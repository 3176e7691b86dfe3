using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Numerics;
using System.Runtime.InteropServices;
using GpuTransformer.Kernels.Backends;
using ILGPU;
using ILGPU.Runtime;

namespace GpuTransformer.Training.Distributed;

/// <summary>
/// Ranks started by Open MPI's <c>mpirun</c> (or run alone, as an MPI singleton), reducing host
/// buffers through libmpi.so.40 (P/Invoke; CUDA-aware MPI is out of scope: device buffers are
/// copied through host memory). MPI starts once per process (<see cref="Start"/>) and is
/// finalized by <see cref="Dispose"/>.
/// <para>
/// <b>The sum is taken in rank order</b>, ((v₀ + v₁) + v₂) + …, in float: bitwise the same on every
/// rank, in every run, whatever algorithm Open MPI picks, and bitwise what one process gets by
/// adding the ranks' buffers one after another (gradient accumulation). MPI_Allreduce promises
/// none of that (its order depends on the algorithm, which depends on sizes and the number of
/// ranks), so the reduction is ours over MPI's data movement: an all-to-all hands rank r the
/// r-th chunk of every rank's buffer, rank r sums those chunks in rank order, and an all-gather
/// returns the summed chunks to everyone. Each rank sends and receives 2(N−1)/N of the buffer —
/// the traffic of a ring all-reduce — in two collectives, in segments of
/// <see cref="CommunicatorOptions.MpiSegmentFloats"/> so the scratch stays bounded.
/// </para>
/// <para>
/// Errors: calls return codes (MPI_ERRORS_RETURN), turned into a <see cref="CommunicatorException"/>
/// with MPI_Error_string. A rank that dies makes mpirun stop the others within seconds; they print
/// "stopped by SIGTERM" (see <see cref="ICommunicator"/> on failures).
/// </para>
/// </summary>
public sealed unsafe class MpiCommunicator : ICommunicator
{
    private static readonly Lock ProcessGate = new();
    private static bool startedInThisProcess;

    private readonly OpenMpiLibrary mpi;
    private readonly CommunicatorOptions options;
    private readonly Lock gate = new(); // MPI_THREAD_SERIALIZED: one MPI call at a time
    private readonly string version;
    private readonly PosixSignalRegistration terminated;
    // The all-to-all's layout: rank j's chunk of a segment is [starts[j], starts[j] + counts[j]); [Size] each.
    private readonly int[] counts;
    private readonly int[] starts;
    private readonly int[] receiveCounts;
    private readonly int[] receiveStarts;
    private float[] scratch = []; // [Size, this rank's chunk]: every rank's copy of this rank's chunk
    private float[] staging = []; // device buffers pass through here
    private bool disposed;

    private MpiCommunicator(OpenMpiLibrary mpi, CommunicatorOptions options)
    {
        this.mpi = mpi;
        this.options = options;
        int provided, rank, size;
        var code = mpi.InitThread(null, null, OpenMpiLibrary.ThreadSerialized, &provided);
        if (code != OpenMpiLibrary.Success)
            throw new CommunicatorException($"MPI_Init_thread failed: {mpi.Describe(code)} (MPI error {code}).");
        if (provided < OpenMpiLibrary.ThreadSerialized)
            throw new CommunicatorException($"Open MPI offers thread level {provided}; GpuTransformer needs MPI_THREAD_SERIALIZED ({OpenMpiLibrary.ThreadSerialized}).");
        Check(mpi.CommSetErrhandler(mpi.CommWorld, mpi.ErrorsReturn), "MPI_Comm_set_errhandler");
        Check(mpi.CommRank(mpi.CommWorld, &rank), "MPI_Comm_rank");
        Check(mpi.CommSize(mpi.CommWorld, &size), "MPI_Comm_size");
        Rank = rank;
        Size = size;
        version = mpi.Version();
        counts = new int[size];
        starts = new int[size];
        receiveCounts = new int[size];
        receiveStarts = new int[size];
        // mpirun ends the surviving ranks with SIGTERM when one fails: say so, then terminate as asked.
        terminated = PosixSignalRegistration.Create(PosixSignal.SIGTERM, _ => CollectiveRules.Announce(
            Rank, Size, "stopped by SIGTERM: the MPI launcher is ending the job (another rank failed, or the job was cancelled)."));
    }

    /// <summary>Starts MPI in this process (MPI_Init_thread) and joins MPI_COMM_WORLD.</summary>
    /// <exception cref="CommunicatorException">libmpi.so.40 is missing (the message names the packages to install) or MPI does not start.</exception>
    /// <exception cref="InvalidOperationException">MPI was started in this process before (it can start only once).</exception>
    public static MpiCommunicator Start(CommunicatorOptions? options = null)
    {
        options ??= new CommunicatorOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MpiSegmentFloats, 1, nameof(options));
        var mpi = OpenMpiLibrary.Load();
        lock (ProcessGate)
        {
            if (startedInThisProcess)
                throw new InvalidOperationException("MPI was started in this process already and starts only once per process: share one MpiCommunicator.");
            startedInThisProcess = true;
        }
        return new MpiCommunicator(mpi, options);
    }

    /// <inheritdoc/>
    public int Rank { get; }

    /// <inheritdoc/>
    public int Size { get; }

    /// <inheritdoc/>
    public string Description => $"MPI ({version}), rank {Rank} of {Size}";

    /// <inheritdoc/>
    public void AllReduceSum(Span<float> values)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if (options.CheckLengths)
            this.RequireSameOnAllRanks("the length of the buffer passed to AllReduceSum", values.Length);
        if (Size == 1 || values.IsEmpty)
            return;
        lock (gate)
        {
            fixed (float* buffer = values)
            {
                for (var start = 0; start < values.Length; start += options.MpiSegmentFloats)
                    SumInRankOrder(buffer + start, Math.Min(options.MpiSegmentFloats, values.Length - start));
            }
        }
    }

    /// <inheritdoc/>
    public void AllReduceSum(ArrayView<float> values, ComputeDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        var host = Staging(values.Length);
        values.CopyToCPU(device.Stream, host); // waits for the stream
        AllReduceSum(host);
        values.CopyFromCPU(device.Stream, (ReadOnlySpan<float>)host);
    }

    /// <inheritdoc/>
    public void Broadcast<T>(Span<T> values, int root)
        where T : unmanaged
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        CollectiveRules.CheckRoot(root, Size);
        if (options.CheckLengths)
            this.RequireSameOnAllRanks("the length of the buffer passed to Broadcast", values.Length);
        var bytes = MemoryMarshal.AsBytes(values);
        const int Piece = 1 << 30; // MPI counts are ints
        lock (gate)
        {
            fixed (byte* buffer = bytes)
            {
                for (var start = 0; start < bytes.Length; start += Piece)
                    Check(mpi.Bcast(buffer + start, Math.Min(Piece, bytes.Length - start), mpi.Byte, root, mpi.CommWorld), "MPI_Bcast");
            }
        }
    }

    /// <inheritdoc/>
    public void Broadcast(ArrayView<float> values, int root, ComputeDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        CollectiveRules.CheckRoot(root, Size);
        var host = Staging(values.Length);
        if (Rank == root)
            values.CopyToCPU(device.Stream, host);
        Broadcast(host, root);
        if (Rank != root)
            values.CopyFromCPU(device.Stream, (ReadOnlySpan<float>)host);
    }

    /// <inheritdoc/>
    public void AllGather<T>(ReadOnlySpan<T> mine, Span<T> all)
        where T : unmanaged
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        CollectiveRules.CheckAllGather(mine.Length, all.Length, Size);
        var bytes = (long)mine.Length * sizeof(T);
        if (bytes > int.MaxValue)
            throw new ArgumentException($"AllGather of {bytes} bytes per rank exceeds MPI's int count; gather less at a time.", nameof(mine));
        lock (gate)
        {
            fixed (T* send = mine)
            fixed (T* receive = all)
                Check(mpi.Allgather(send, (int)bytes, mpi.Byte, receive, (int)bytes, mpi.Byte, mpi.CommWorld), "MPI_Allgather");
        }
    }

    /// <inheritdoc/>
    public void Barrier()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        lock (gate)
            Check(mpi.Barrier(mpi.CommWorld), "MPI_Barrier");
    }

    /// <summary>MPI_Abort on MPI_COMM_WORLD: mpirun ends every rank and prints that this one aborted.</summary>
    [DoesNotReturn]
    public void Abort(string reason)
    {
        CollectiveRules.Announce(Rank, Size, reason);
        // Not under the lock: another thread may be blocked inside a collective, which is why we abort.
        mpi.Abort(mpi.CommWorld, 1);
        Environment.Exit(1);
        throw new UnreachableException("MPI_Abort and Environment.Exit returned");
    }

    /// <summary>
    /// MPI_Finalize — unless an exception is propagating: then the other ranks may be inside a
    /// collective this rank will never enter and finalizing would wait for them forever, so MPI is
    /// left running; the process exits with its exception and mpirun ends the job.
    /// </summary>
    public void Dispose()
    {
        if (disposed)
            return;
        disposed = true;
        terminated.Dispose();
        if (CollectiveRules.ExceptionInFlight)
            return;
        int code;
        lock (gate)
            code = mpi.Finalize();
        if (code != OpenMpiLibrary.Success)
            CollectiveRules.Announce(Rank, Size, $"MPI_Finalize failed: {mpi.Describe(code)} (MPI error {code}).");
    }

    /// <inheritdoc/>
    public override string ToString() => Description;

    /// <summary>
    /// Sums one segment of every rank's buffer in rank order, in place:
    /// all-to-all (rank r receives chunk r of every rank: scratch [Size, chunk]), the rank-order
    /// sum of those rows into chunk r, all-gather of the summed chunks.
    /// </summary>
    private void SumInRankOrder(float* segment, int length)
    {
        for (var rank = 0; rank < Size; rank++)
        {
            starts[rank] = (int)((long)length * rank / Size);
            counts[rank] = (int)((long)length * (rank + 1) / Size) - starts[rank];
        }
        var chunk = counts[Rank];
        for (var rank = 0; rank < Size; rank++)
        {
            receiveCounts[rank] = chunk;
            receiveStarts[rank] = rank * chunk;
        }
        if (scratch.Length < Size * chunk)
            scratch = new float[Size * chunk];
        fixed (int* sendCounts = counts, sendStarts = starts, receiveCountsPtr = receiveCounts, receiveStartsPtr = receiveStarts)
        fixed (float* rows = scratch)
        {
            Check(mpi.Alltoallv(segment, sendCounts, sendStarts, mpi.Float, rows, receiveCountsPtr, receiveStartsPtr, mpi.Float, mpi.CommWorld), "MPI_Alltoallv");
            var sum = new Span<float>(segment + starts[Rank], chunk);
            new ReadOnlySpan<float>(rows, chunk).CopyTo(sum);
            for (var rank = 1; rank < Size; rank++)
                AddInto(sum, new ReadOnlySpan<float>(rows + (rank * chunk), chunk));
            Check(mpi.Allgatherv(OpenMpiLibrary.InPlace, 0, mpi.Float, segment, sendCounts, sendStarts, mpi.Float, mpi.CommWorld), "MPI_Allgatherv");
        }
    }

    /// <summary>sum[i] += addend[i]: one float add per element, SIMD lanes included, so the result is the scalar loop's bit for bit.</summary>
    private static void AddInto(Span<float> sum, ReadOnlySpan<float> addend)
    {
        var i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var sums = MemoryMarshal.Cast<float, Vector<float>>(sum);
            var addends = MemoryMarshal.Cast<float, Vector<float>>(addend);
            for (var v = 0; v < sums.Length; v++)
                sums[v] += addends[v];
            i = sums.Length * Vector<float>.Count;
        }
        for (; i < sum.Length; i++)
            sum[i] += addend[i];
    }

    /// <summary>Host memory for <paramref name="length"/> floats of a device buffer, reused from call to call.</summary>
    private Span<float> Staging(long length)
    {
        if (length > Array.MaxLength)
            throw new ArgumentException($"A device buffer of {length} floats is larger than a host array can hold; reduce it in parts.", nameof(length));
        if (staging.Length < length)
            staging = new float[length];
        return staging.AsSpan(0, (int)length);
    }

    private void Check(int code, string call)
    {
        if (code != OpenMpiLibrary.Success)
            throw new CommunicatorException($"rank {Rank}/{Size}: {call} failed: {mpi.Describe(code)} (MPI error {code}).");
    }
}
