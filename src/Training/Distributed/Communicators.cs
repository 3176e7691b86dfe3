using GpuTransformer.Kernels.Backends;

namespace GpuTransformer.Training.Distributed;

/// <summary>Which communicator <see cref="Communicators.Create(CommunicatorOptions?, ComputeDevice?)"/> makes.</summary>
public enum CommunicatorKind
{
    /// <summary>Single process without a launcher; under mpirun NCCL on a CUDA device where libnccl.so.2 loads, MPI otherwise.</summary>
    Auto,

    /// <summary><see cref="SingleProcessCommunicator"/>.</summary>
    Single,

    /// <summary><see cref="MpiCommunicator"/> (one rank without mpirun: an MPI singleton).</summary>
    Mpi,

    /// <summary><see cref="NcclCommunicator"/> over an MPI bootstrap (a single process without mpirun).</summary>
    Nccl,
}

/// <summary>Options of a communicator.</summary>
public sealed record CommunicatorOptions
{
    /// <summary>Which communicator (default: <see cref="CommunicatorKind.Auto"/>).</summary>
    public CommunicatorKind Kind { get; init; } = CommunicatorKind.Auto;

    /// <summary>
    /// Check before each collective that every rank passes a buffer of the same length, so a
    /// mismatch is one clear error on every rank instead of a hang or a wrong sum (MPI does not
    /// check). Costs one 8-byte all-gather per call: microseconds in one machine.
    /// </summary>
    public bool CheckLengths { get; init; } = true;

    /// <summary>
    /// MPI reduces in segments of this many floats (4M, 16 MiB): the rank-order sum's scratch is one
    /// segment, and MPI's int counts stay far from their limit.
    /// </summary>
    public int MpiSegmentFloats { get; init; } = 1 << 22;
}

/// <summary>Makes the communicator for how this process was started (<see cref="Communicators.Create(CommunicatorOptions?, ComputeDevice?)"/>).</summary>
public static class Communicators
{
    /// <summary>Names of <see cref="CommunicatorKind"/> as a command line spells them.</summary>
    public static readonly IReadOnlyList<string> KindNames = ["auto", "single", "mpi", "nccl"];

    /// <summary>The kind named <paramref name="name"/> (one of <see cref="KindNames"/>), or null.</summary>
    public static CommunicatorKind? ParseKind(string name) => name?.Trim().ToLowerInvariant() switch
    {
        "auto" => CommunicatorKind.Auto,
        "single" => CommunicatorKind.Single,
        "mpi" => CommunicatorKind.Mpi,
        "nccl" => CommunicatorKind.Nccl,
        _ => null,
    };

    /// <summary>
    /// True when this process was started by Open MPI's mpirun (<c>OMPI_COMM_WORLD_SIZE</c>) or a
    /// PMIx launcher Open MPI understands (<c>PMIX_RANK</c>: <c>prterun</c>, <c>srun --mpi=pmix</c>).
    /// </summary>
    public static bool LaunchedByMpi => Launch(Environment.GetEnvironmentVariable) == Launcher.OpenMpi;

    /// <summary>
    /// The communicator for this process: <paramref name="options"/>' kind, resolved as
    /// <see cref="CommunicatorKind.Auto"/> says. Every rank calls it at start-up; bad input fails on
    /// every rank before any collective.
    /// </summary>
    /// <param name="options">Kind and checks.</param>
    /// <param name="device">This rank's device: NCCL needs a CUDA one; Auto uses NCCL only on CUDA.</param>
    /// <exception cref="CommunicatorException">A launcher GpuTransformer cannot join (MPICH's), the single-process kind under mpirun, or MPI/NCCL missing.</exception>
    /// <exception cref="ArgumentException">NCCL asked for without a CUDA device.</exception>
    public static ICommunicator Create(CommunicatorOptions? options = null, ComputeDevice? device = null) =>
        Create(options, device, Environment.GetEnvironmentVariable);

    /// <summary>As <see cref="Create(CommunicatorOptions?, ComputeDevice?)"/> in the environment <paramref name="variable"/> reads (tests).</summary>
    internal static ICommunicator Create(CommunicatorOptions? options, ComputeDevice? device, Func<string, string?> variable)
    {
        options ??= new CommunicatorOptions();
        var launch = Launch(variable);
        if (launch == Launcher.OtherMpi)
            throw new CommunicatorException(
                "This process was started by an MPI launcher that sets PMI_RANK (MPICH's or Intel MPI's mpiexec, or srun --mpi=pmi2), " +
                $"but GpuTransformer binds Open MPI ({OpenMpiLibrary.LibraryName}): start it with Open MPI's mpirun, or srun --mpi=pmix.");
        var kind = options.Kind;
        if (kind == CommunicatorKind.Auto)
        {
            kind = launch == Launcher.None ? CommunicatorKind.Single
                : device?.Backend == Backend.Cuda && NcclLibrary.IsAvailable() ? CommunicatorKind.Nccl
                : CommunicatorKind.Mpi;
        }
        switch (kind)
        {
            case CommunicatorKind.Single when launch == Launcher.OpenMpi:
                throw new CommunicatorException(
                    $"The single-process communicator was asked for, but mpirun started this process as one of {variable("OMPI_COMM_WORLD_SIZE") ?? "several"} ranks: " +
                    "each would train alone. Use the MPI or NCCL communicator under mpirun, or run without mpirun.");
            case CommunicatorKind.Single:
                return new SingleProcessCommunicator();
            case CommunicatorKind.Mpi:
                return MpiCommunicator.Start(options);
            case CommunicatorKind.Nccl:
                NcclCommunicator.RequireCuda(device);
                var nccl = NcclLibrary.Load(); // a missing NCCL fails every rank alike, before MPI starts
                ICommunicator bootstrap = launch == Launcher.OpenMpi ? MpiCommunicator.Start(options) : new SingleProcessCommunicator();
                try
                {
                    return NcclCommunicator.Create(nccl, device!, bootstrap, ownsBootstrap: true, options);
                }
                catch
                {
                    bootstrap.Dispose(); // inside the catch: MPI is left running, the launcher ends the job (CollectiveRules.ExceptionInFlight)
                    throw;
                }
            default:
                throw new ArgumentOutOfRangeException(nameof(options), kind, "unknown communicator kind");
        }
    }

    /// <summary>This process's rank among the ranks of its machine under mpirun (<c>OMPI_COMM_WORLD_LOCAL_RANK</c>), or null.</summary>
    public static int? LocalRank =>
        int.TryParse(Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_LOCAL_RANK"), out var rank) ? rank : null;

    /// <summary>
    /// <paramref name="options"/> with one GPU per rank of a machine: under mpirun, when the backend
    /// <paramref name="backend"/> resolves to has several GPUs and no device index was asked for,
    /// local rank r gets device r mod count (so <c>mpirun -np 8</c> on an 8-GPU machine uses all 8;
    /// a launcher that sets CUDA_VISIBLE_DEVICES per rank leaves one GPU each, and r mod 1 = 0).
    /// Otherwise <paramref name="options"/> unchanged.
    /// </summary>
    public static DeviceOptions OneDevicePerRank(DeviceOptions options, Backend? backend)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.DeviceIndex is not null || LocalRank is not { } local)
            return options;
        var found = ComputeDevice.ListDevices(options);
        var chosen = ComputeDevice.Choose(found, backend, options);
        var gpus = found.Count(d => d.Backend == chosen.Backend && d.Kind == DeviceKind.Gpu);
        return chosen.Kind == DeviceKind.Gpu && gpus > 1 ? options with { DeviceIndex = local % gpus } : options;
    }

    internal enum Launcher
    {
        None,
        OpenMpi,
        OtherMpi,
    }

    /// <summary>Which launcher started this process, from the environment variables it sets.</summary>
    internal static Launcher Launch(Func<string, string?> variable) =>
        variable("OMPI_COMM_WORLD_SIZE") is not null || variable("PMIX_RANK") is not null ? Launcher.OpenMpi
        : variable("PMI_RANK") is not null || variable("PMI_SIZE") is not null ? Launcher.OtherMpi
        : Launcher.None;
}
