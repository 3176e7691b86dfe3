using System.Text;

namespace GpuTransformer.Training.Distributed;

/// <summary>
/// Open MPI's C API (libmpi.so.40: Open MPI 3.x–5.x, Debian's <c>libopenmpi3</c>) through function
/// pointers. Open MPI's handles are pointers to global objects — <c>MPI_COMM_WORLD</c> is
/// <c>&amp;ompi_mpi_comm_world</c>, <c>MPI_FLOAT</c> is <c>&amp;ompi_mpi_float</c> — so each handle
/// is the address of that symbol (this is Open MPI's ABI; MPICH's integer handles differ).
/// Every call returns an MPI error code once <see cref="ErrorsReturn"/> is set on the communicator.
/// </summary>
internal sealed unsafe class OpenMpiLibrary
{
    public const string LibraryName = "libmpi.so.40";

    /// <summary>Environment variable naming another path to libmpi.so.40.</summary>
    public const string LibraryVariable = "GPUTRANSFORMER_MPI_LIBRARY";

    public const string Install = "install Open MPI (Debian/Ubuntu: apt-get install openmpi-bin libopenmpi3)";

    public const int Success = 0;

    /// <summary>MPI_THREAD_SERIALIZED: any thread may call, one at a time (we hold a lock).</summary>
    public const int ThreadSerialized = 2;

    /// <summary>MPI_IN_PLACE is <c>(void*)1</c> in Open MPI.</summary>
    public static readonly void* InPlace = (void*)1;

    public static readonly IReadOnlyList<string> Candidates = [LibraryName, "libmpi.so"];

    public readonly IntPtr CommWorld;
    public readonly IntPtr Float;
    public readonly IntPtr Byte;
    public readonly IntPtr ErrorsReturn;

    public readonly delegate* unmanaged<int*, byte***, int, int*, int> InitThread;
    public readonly delegate* unmanaged<int*, int> Initialized;
    public readonly delegate* unmanaged<int*, int> Finalized;
    public readonly delegate* unmanaged<int> Finalize;
    public readonly delegate* unmanaged<IntPtr, int*, int> CommRank;
    public readonly delegate* unmanaged<IntPtr, int*, int> CommSize;
    public readonly delegate* unmanaged<IntPtr, IntPtr, int> CommSetErrhandler;
    public readonly delegate* unmanaged<int, byte*, int*, int> ErrorString;
    public readonly delegate* unmanaged<byte*, int*, int> GetLibraryVersion;
    // (sendbuf, sendcounts, sdispls, sendtype, recvbuf, recvcounts, rdispls, recvtype, comm)
    public readonly delegate* unmanaged<void*, int*, int*, IntPtr, void*, int*, int*, IntPtr, IntPtr, int> Alltoallv;
    // (sendbuf, sendcount, sendtype, recvbuf, recvcounts, displs, recvtype, comm)
    public readonly delegate* unmanaged<void*, int, IntPtr, void*, int*, int*, IntPtr, IntPtr, int> Allgatherv;
    // (sendbuf, sendcount, sendtype, recvbuf, recvcount, recvtype, comm)
    public readonly delegate* unmanaged<void*, int, IntPtr, void*, int, IntPtr, IntPtr, int> Allgather;
    // (buffer, count, datatype, root, comm)
    public readonly delegate* unmanaged<void*, int, IntPtr, int, IntPtr, int> Bcast;
    public readonly delegate* unmanaged<IntPtr, int> Barrier;
    public readonly delegate* unmanaged<IntPtr, int, int> Abort;

    private OpenMpiLibrary(IntPtr handle)
    {
        IntPtr Export(string symbol) => CollectiveLibraries.Export(handle, LibraryName, symbol);
        CommWorld = Export("ompi_mpi_comm_world");
        Float = Export("ompi_mpi_float");
        Byte = Export("ompi_mpi_byte");
        ErrorsReturn = Export("ompi_mpi_errors_return");
        InitThread = (delegate* unmanaged<int*, byte***, int, int*, int>)Export("MPI_Init_thread");
        Initialized = (delegate* unmanaged<int*, int>)Export("MPI_Initialized");
        Finalized = (delegate* unmanaged<int*, int>)Export("MPI_Finalized");
        Finalize = (delegate* unmanaged<int>)Export("MPI_Finalize");
        CommRank = (delegate* unmanaged<IntPtr, int*, int>)Export("MPI_Comm_rank");
        CommSize = (delegate* unmanaged<IntPtr, int*, int>)Export("MPI_Comm_size");
        CommSetErrhandler = (delegate* unmanaged<IntPtr, IntPtr, int>)Export("MPI_Comm_set_errhandler");
        ErrorString = (delegate* unmanaged<int, byte*, int*, int>)Export("MPI_Error_string");
        GetLibraryVersion = (delegate* unmanaged<byte*, int*, int>)Export("MPI_Get_library_version");
        Alltoallv = (delegate* unmanaged<void*, int*, int*, IntPtr, void*, int*, int*, IntPtr, IntPtr, int>)Export("MPI_Alltoallv");
        Allgatherv = (delegate* unmanaged<void*, int, IntPtr, void*, int*, int*, IntPtr, IntPtr, int>)Export("MPI_Allgatherv");
        Allgather = (delegate* unmanaged<void*, int, IntPtr, void*, int, IntPtr, IntPtr, int>)Export("MPI_Allgather");
        Bcast = (delegate* unmanaged<void*, int, IntPtr, int, IntPtr, int>)Export("MPI_Bcast");
        Barrier = (delegate* unmanaged<IntPtr, int>)Export("MPI_Barrier");
        Abort = (delegate* unmanaged<IntPtr, int, int>)Export("MPI_Abort");
    }

    /// <summary>Loads libmpi.so.40 (or <see cref="LibraryVariable"/>'s path) and resolves every entry point used.</summary>
    /// <exception cref="CommunicatorException">Not found (the message names the packages) or not Open MPI.</exception>
    public static OpenMpiLibrary Load() => Load(Candidates);

    /// <summary>As <see cref="Load()"/> from other candidate names (tests: a missing library).</summary>
    internal static OpenMpiLibrary Load(IReadOnlyList<string> candidates) =>
        new(CollectiveLibraries.Load($"Open MPI's {LibraryName}", LibraryVariable, candidates, Install));

    /// <summary>True when libmpi.so.40 (or the override) loads.</summary>
    public static bool IsAvailable() => CollectiveLibraries.IsAvailable(LibraryVariable, Candidates);

    /// <summary>MPI_Error_string of <paramref name="code"/>.</summary>
    public string Describe(int code)
    {
        var text = stackalloc byte[1024]; // MPI_MAX_ERROR_STRING is 256 in Open MPI
        var length = 0;
        return ErrorString(code, text, &length) == Success ? Encoding.UTF8.GetString(text, length) : $"MPI error {code}";
    }

    /// <summary>The first part of MPI_Get_library_version, e.g. "Open MPI v4.1.4".</summary>
    public string Version()
    {
        var text = stackalloc byte[1024]; // MPI_MAX_LIBRARY_VERSION_STRING is 256 in Open MPI
        var length = 0;
        if (GetLibraryVersion(text, &length) != Success)
            return "Open MPI";
        var full = Encoding.UTF8.GetString(text, length);
        return full.Split(',')[0].Trim();
    }
}
