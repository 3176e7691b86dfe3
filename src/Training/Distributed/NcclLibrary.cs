using System.Runtime.InteropServices;

namespace GpuTransformer.Training.Distributed;

/// <summary>NCCL's <c>ncclUniqueId</c>: 128 opaque bytes rank 0 makes and every rank passes to ncclCommInitRank.</summary>
[StructLayout(LayoutKind.Sequential, Size = Bytes)]
internal struct NcclUniqueId
{
    public const int Bytes = 128; // NCCL_UNIQUE_ID_BYTES

    private byte first; // the rest of the 128 bytes follow (Size above)
}

/// <summary>
/// NCCL's C API (libnccl.so.2) through function pointers: the calls a data-parallel all-reduce
/// needs. Types as nccl.h declares them: <c>ncclResult_t</c> and <c>ncclDataType_t</c> are C enums
/// (int), <c>ncclComm_t</c> and <c>cudaStream_t</c> pointers, counts <c>size_t</c>.
/// </summary>
internal sealed unsafe class NcclLibrary
{
    public const string LibraryName = "libnccl.so.2";

    /// <summary>Environment variable naming another path to libnccl.so.2 (pip's nvidia-nccl wheels install it under site-packages/nvidia/nccl/lib).</summary>
    public const string LibraryVariable = "GPUTRANSFORMER_NCCL_LIBRARY";

    public const string Install =
        "install NCCL (NVIDIA's CUDA apt repository: apt-get install libnccl2; or pip install nvidia-nccl-cu12 / nvidia-nccl-cu13) and put it on LD_LIBRARY_PATH";

    public const int Success = 0;   // ncclSuccess
    public const int Float32 = 7;   // ncclFloat32
    public const int Sum = 0;       // ncclSum

    public static readonly IReadOnlyList<string> Candidates = [LibraryName, "libnccl.so"];

    public readonly delegate* unmanaged<int*, int> GetVersion;
    public readonly delegate* unmanaged<NcclUniqueId*, int> GetUniqueId;
    // (comm*, nranks, commId by value, rank)
    public readonly delegate* unmanaged<IntPtr*, int, NcclUniqueId, int, int> CommInitRank;
    // (sendbuff, recvbuff, count, datatype, op, comm, stream)
    public readonly delegate* unmanaged<void*, void*, nuint, int, int, IntPtr, IntPtr, int> AllReduce;
    // (sendbuff, recvbuff, count, datatype, root, comm, stream)
    public readonly delegate* unmanaged<void*, void*, nuint, int, int, IntPtr, IntPtr, int> Broadcast;
    public readonly delegate* unmanaged<IntPtr, int> CommDestroy;
    public readonly delegate* unmanaged<IntPtr, int> CommAbort;
    public readonly delegate* unmanaged<int, byte*> GetErrorString;

    private NcclLibrary(IntPtr handle)
    {
        IntPtr Export(string symbol) => CollectiveLibraries.Export(handle, LibraryName, symbol);
        GetVersion = (delegate* unmanaged<int*, int>)Export("ncclGetVersion");
        GetUniqueId = (delegate* unmanaged<NcclUniqueId*, int>)Export("ncclGetUniqueId");
        CommInitRank = (delegate* unmanaged<IntPtr*, int, NcclUniqueId, int, int>)Export("ncclCommInitRank");
        AllReduce = (delegate* unmanaged<void*, void*, nuint, int, int, IntPtr, IntPtr, int>)Export("ncclAllReduce");
        Broadcast = (delegate* unmanaged<void*, void*, nuint, int, int, IntPtr, IntPtr, int>)Export("ncclBroadcast");
        CommDestroy = (delegate* unmanaged<IntPtr, int>)Export("ncclCommDestroy");
        CommAbort = (delegate* unmanaged<IntPtr, int>)Export("ncclCommAbort");
        GetErrorString = (delegate* unmanaged<int, byte*>)Export("ncclGetErrorString");
    }

    /// <summary>Loads libnccl.so.2 (or <see cref="LibraryVariable"/>'s path) and resolves every entry point used.</summary>
    /// <exception cref="CommunicatorException">Not found (the message says how to install it).</exception>
    public static NcclLibrary Load() => Load(Candidates);

    /// <summary>As <see cref="Load()"/> from other candidate names (tests: a missing library).</summary>
    internal static NcclLibrary Load(IReadOnlyList<string> candidates) =>
        new(CollectiveLibraries.Load($"NCCL's {LibraryName}", LibraryVariable, candidates, Install));

    /// <summary>True when libnccl.so.2 (or the override) loads.</summary>
    public static bool IsAvailable() => CollectiveLibraries.IsAvailable(LibraryVariable, Candidates);

    /// <summary>ncclGetErrorString of <paramref name="result"/>.</summary>
    public string Describe(int result) => Marshal.PtrToStringUTF8((IntPtr)GetErrorString(result)) ?? $"NCCL error {result}";

    /// <summary>"NCCL 2.27.3" from ncclGetVersion's integer (major·10000 + minor·100 + patch since 2.9).</summary>
    public string Version()
    {
        int code;
        return GetVersion(&code) == Success ? $"NCCL {code / 10000}.{code / 100 % 100}.{code % 100}" : "NCCL";
    }
}
