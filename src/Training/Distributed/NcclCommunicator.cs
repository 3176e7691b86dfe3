using System.Diagnostics.CodeAnalysis;
using GpuTransformer.Kernels.Backends;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace GpuTransformer.Training.Distributed;

/// <summary>
/// One CUDA device per rank, reducing device buffers with NCCL (libnccl.so.2, P/Invoke) on the
/// device's ILGPU stream — asynchronous, ordered like a kernel launch. The ranks find each other
/// through a bootstrap communicator: rank 0 makes NCCL's unique id and broadcasts it over MPI
/// (or, with one rank, a <see cref="SingleProcessCommunicator"/>: a valid single-GPU NCCL job).
/// Host buffers, all-gathers and barriers go through the bootstrap.
/// <para>
/// Order of the sum: NCCL's (ring or tree, chosen by NCCL from sizes and topology): the same from
/// run to run on the same machine and NCCL version, but not the rank order of
/// <see cref="MpiCommunicator"/> — compare with a single process within a tolerance, not bitwise.
/// </para>
/// </summary>
public sealed unsafe class NcclCommunicator : ICommunicator
{
    private readonly NcclLibrary nccl;
    private readonly ComputeDevice device;
    private readonly ICommunicator bootstrap;
    private readonly bool ownsBootstrap;
    private readonly CommunicatorOptions options;
    private readonly string version;
    private IntPtr comm;

    private NcclCommunicator(NcclLibrary nccl, ComputeDevice device, ICommunicator bootstrap, bool ownsBootstrap, CommunicatorOptions options)
    {
        this.nccl = nccl;
        this.device = device;
        this.bootstrap = bootstrap;
        this.ownsBootstrap = ownsBootstrap;
        this.options = options;
        version = nccl.Version();
        NcclUniqueId id = default;
        if (bootstrap.Rank == 0)
            Check(nccl.GetUniqueId(&id), "ncclGetUniqueId");
        bootstrap.Broadcast(new Span<byte>(&id, NcclUniqueId.Bytes), root: 0);
        device.Accelerator.Bind(); // NCCL works in the calling thread's current CUDA context: make it ILGPU's
        IntPtr created;
        Check(nccl.CommInitRank(&created, bootstrap.Size, id, bootstrap.Rank), "ncclCommInitRank");
        comm = created;
    }

    /// <summary>
    /// Joins the NCCL job of <paramref name="bootstrap"/>'s ranks on <paramref name="device"/>
    /// (collective: every rank calls it).
    /// </summary>
    /// <param name="device">This rank's CUDA device; device buffers passed later must live on it. Dispose the communicator first.</param>
    /// <param name="bootstrap">Shares NCCL's unique id; carries the host collectives.</param>
    /// <param name="ownsBootstrap">Dispose <paramref name="bootstrap"/> with this communicator.</param>
    /// <param name="options">Length checks.</param>
    /// <exception cref="ArgumentException"><paramref name="device"/> is not a CUDA device.</exception>
    /// <exception cref="CommunicatorException">libnccl.so.2 is missing (the message says how to install it) or NCCL fails to start.</exception>
    public static NcclCommunicator Create(ComputeDevice device, ICommunicator bootstrap, bool ownsBootstrap = false, CommunicatorOptions? options = null)
    {
        RequireCuda(device);
        return Create(NcclLibrary.Load(), device, bootstrap, ownsBootstrap, options);
    }

    /// <summary>As the public <c>Create</c> with NCCL loaded already (<see cref="Communicators.Create(CommunicatorOptions?, ComputeDevice?)"/> loads it before it starts MPI).</summary>
    internal static NcclCommunicator Create(NcclLibrary nccl, ComputeDevice device, ICommunicator bootstrap, bool ownsBootstrap, CommunicatorOptions? options)
    {
        ArgumentNullException.ThrowIfNull(bootstrap);
        return new NcclCommunicator(nccl, device, bootstrap, ownsBootstrap, options ?? new CommunicatorOptions());
    }

    /// <summary>Throws unless <paramref name="device"/> is a CUDA device (before anything is loaded, on every rank).</summary>
    internal static void RequireCuda(ComputeDevice? device)
    {
        ArgumentNullException.ThrowIfNull(device);
        if (device.Backend != Backend.Cuda)
            throw new ArgumentException(
                $"NCCL reduces CUDA device buffers, but this rank's device is {device.Description.BackendName}:{device.Description.IndexInBackend} " +
                $"({device.Description.Name}); use the MPI communicator on this backend (it reduces through host memory) or run on a CUDA device.",
                nameof(device));
    }

    /// <inheritdoc/>
    public int Rank => bootstrap.Rank;

    /// <inheritdoc/>
    public int Size => bootstrap.Size;

    /// <inheritdoc/>
    public string Description => $"{version} on {device.Description.Name} ({(Size == 1 ? "single process" : bootstrap.Description)}), rank {Rank} of {Size}";

    /// <summary>Host memory: through the bootstrap communicator.</summary>
    public void AllReduceSum(Span<float> values) => bootstrap.AllReduceSum(values);

    /// <inheritdoc/>
    public void AllReduceSum(ArrayView<float> values, ComputeDevice device)
    {
        var stream = Stream(device, values.Length, "AllReduceSum");
        if (values.Length == 0)
            return;
        var buffer = (void*)values.LoadEffectiveAddressAsPtr();
        Check(nccl.AllReduce(buffer, buffer, (nuint)values.Length, NcclLibrary.Float32, NcclLibrary.Sum, comm, stream), "ncclAllReduce");
    }

    /// <summary>Host memory: through the bootstrap communicator.</summary>
    public void Broadcast<T>(Span<T> values, int root)
        where T : unmanaged => bootstrap.Broadcast(values, root);

    /// <inheritdoc/>
    public void Broadcast(ArrayView<float> values, int root, ComputeDevice device)
    {
        CollectiveRules.CheckRoot(root, Size);
        var stream = Stream(device, values.Length, "Broadcast");
        if (values.Length == 0)
            return;
        var buffer = (void*)values.LoadEffectiveAddressAsPtr();
        Check(nccl.Broadcast(buffer, buffer, (nuint)values.Length, NcclLibrary.Float32, root, comm, stream), "ncclBroadcast");
    }

    /// <inheritdoc/>
    public void AllGather<T>(ReadOnlySpan<T> mine, Span<T> all)
        where T : unmanaged => bootstrap.AllGather(mine, all);

    /// <inheritdoc/>
    public void Barrier() => bootstrap.Barrier();

    /// <inheritdoc/>
    [DoesNotReturn]
    public void Abort(string reason)
    {
        if (comm != IntPtr.Zero)
            _ = nccl.CommAbort(comm);
        comm = IntPtr.Zero;
        bootstrap.Abort(reason);
    }

    /// <summary>
    /// ncclCommDestroy, or ncclCommAbort while an exception propagates (it does not wait for
    /// peers that may never arrive); then the bootstrap if owned.
    /// </summary>
    public void Dispose()
    {
        if (comm != IntPtr.Zero)
        {
            device.Accelerator.Bind();
            var result = CollectiveRules.ExceptionInFlight ? nccl.CommAbort(comm) : nccl.CommDestroy(comm);
            comm = IntPtr.Zero;
            if (result != NcclLibrary.Success)
                CollectiveRules.Announce(Rank, Size, $"ncclCommDestroy failed: {nccl.Describe(result)} (NCCL error {result}).");
        }
        if (ownsBootstrap)
            bootstrap.Dispose();
    }

    /// <inheritdoc/>
    public override string ToString() => Description;

    /// <summary>Checks a device buffer's arguments (on every rank, before NCCL sees them) and returns the CUDA stream to enqueue on.</summary>
    private IntPtr Stream(ComputeDevice bufferDevice, long length, string operation)
    {
        ObjectDisposedException.ThrowIf(comm == IntPtr.Zero, this);
        ArgumentNullException.ThrowIfNull(bufferDevice);
        if (bufferDevice.Accelerator != device.Accelerator)
            throw new ArgumentException(
                $"{operation}: the buffer is on {bufferDevice.Description.Name}, but this NCCL communicator runs on {device.Description.Name}.", nameof(bufferDevice));
        if (options.CheckLengths)
            bootstrap.RequireSameOnAllRanks($"the length of the buffer passed to {operation}", length);
        device.Accelerator.Bind();
        return ((CudaStream)device.Stream).StreamPtr;
    }

    private void Check(int result, string call)
    {
        if (result != NcclLibrary.Success)
            throw new CommunicatorException($"rank {Rank}/{Size}: {call} failed: {nccl.Describe(result)} (NCCL error {result}).");
    }
}
