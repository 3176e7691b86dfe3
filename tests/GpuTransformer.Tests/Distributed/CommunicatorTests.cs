using System.Runtime.CompilerServices;
using GpuTransformer.Training.Distributed;

namespace GpuTransformer.Tests.Distributed;

/// <summary>
/// The communicators in this process: the single-process one, the choice of communicator from the
/// launcher's environment, and the errors that must come before anything starts (missing MPI or
/// NCCL, NCCL off CUDA). MPI itself runs in real jobs (<see cref="MpiJobTests"/>): it starts once
/// per process, which a test host cannot afford.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class CommunicatorTests(Devices devices)
{
    private static readonly Func<string, string?> NoLauncher = _ => null;

    [Fact]
    public void WithoutALauncherAutoIsOneRankWhoseCollectivesLeaveBuffersAsTheyAre()
    {
        using var communicator = Communicators.Create(null, null, NoLauncher);
        Assert.IsType<SingleProcessCommunicator>(communicator);
        Assert.Equal((0, 1), (communicator.Rank, communicator.Size));

        float[] values = [1.5f, -2f, 3e-8f];
        communicator.AllReduceSum(values);
        communicator.Broadcast<float>(values, root: 0);
        Assert.Equal([1.5f, -2f, 3e-8f], values);
        var all = new float[3];
        communicator.AllGather<float>(values, all);
        Assert.Equal(values, all);
        communicator.Barrier();
        communicator.RequireSameOnAllRanks("the config", "anything");
        communicator.RequireSameOnAllRanks("a length", 42);
    }

    [Fact]
    public void BadArgumentsAreRefusedEvenWithOneRank()
    {
        using var communicator = new SingleProcessCommunicator();
        var root = Assert.Throws<ArgumentOutOfRangeException>(() => communicator.Broadcast<float>(new float[2], root: 1));
        Assert.Contains("root 1 is not a rank of this job (ranks 0..0)", root.Message);
        var gather = Assert.Throws<ArgumentException>(() => communicator.AllGather<int>([1, 2], new int[3]));
        Assert.Contains("AllGather of 2 elements per rank over 1 ranks needs a result of 2 elements, not 3", gather.Message);
    }

    [Theory]
    [InlineData("OMPI_COMM_WORLD_SIZE", "OpenMpi")]
    [InlineData("PMIX_RANK", "OpenMpi")]
    [InlineData("PMI_RANK", "OtherMpi")]
    [InlineData("SLURM_PROCID", "None")]
    public void TheLauncherIsReadFromTheVariablesItSets(string variable, string launcher)
    {
        Assert.Equal(launcher, Communicators.Launch(name => name == variable ? "2" : null).ToString());
        Assert.False(Communicators.LaunchedByMpi); // the test host itself is not under mpirun
    }

    [Fact]
    public void ALauncherOtherThanOpenMpisIsOneClearError()
    {
        var error = Assert.Throws<CommunicatorException>(() => Communicators.Create(null, null, name => name == "PMI_RANK" ? "0" : null));
        Assert.Contains("sets PMI_RANK", error.Message);
        Assert.Contains("start it with Open MPI's mpirun", error.Message);
    }

    [Fact]
    public void TheSingleProcessKindUnderMpirunIsRefusedBeforeAnyRankTrainsAlone()
    {
        var error = Assert.Throws<CommunicatorException>(() => Communicators.Create(
            new CommunicatorOptions { Kind = CommunicatorKind.Single }, null, name => name == "OMPI_COMM_WORLD_SIZE" ? "4" : null));
        Assert.Contains("mpirun started this process as one of 4 ranks: each would train alone", error.Message);
    }

    [Fact]
    public void KindsParseByTheirCommandLineNames()
    {
        Assert.Equal([CommunicatorKind.Auto, CommunicatorKind.Single, CommunicatorKind.Mpi, CommunicatorKind.Nccl],
            Communicators.KindNames.Select(name => Communicators.ParseKind(name)!.Value));
        Assert.Null(Communicators.ParseKind("gloo"));
    }

    [Fact]
    public void AMissingMpiLibraryNamesThePackagesToInstall()
    {
        var error = Assert.Throws<CommunicatorException>(() => OpenMpiLibrary.Load(["libmpi-not-here.so.40"]));
        Assert.Equal(
            "Open MPI's libmpi.so.40 was not found (tried libmpi-not-here.so.40): install Open MPI (Debian/Ubuntu: apt-get install openmpi-bin libopenmpi3), " +
            "or set GPUTRANSFORMER_MPI_LIBRARY to its path.", error.Message);
    }

    [Fact]
    public void AMissingNcclLibrarySaysWhereToGetIt()
    {
        var error = Assert.Throws<CommunicatorException>(() => NcclLibrary.Load(["libnccl-not-here.so.2"]));
        Assert.StartsWith("NCCL's libnccl.so.2 was not found (tried libnccl-not-here.so.2): install NCCL", error.Message);
        Assert.Contains("apt-get install libnccl2", error.Message);
        Assert.Contains("pip install nvidia-nccl-cu12", error.Message);
        Assert.EndsWith("or set GPUTRANSFORMER_NCCL_LIBRARY to its path.", error.Message);
    }

    [Fact]
    public void NcclsUniqueIdIsTheHeadersHundredAndTwentyEightBytes() =>
        Assert.Equal(128, Unsafe.SizeOf<NcclUniqueId>());

    /// <summary>The backends present other than CUDA (where NCCL runs: <see cref="OneRankOfNcclOnACudaDeviceReducesAndBroadcastsInPlace"/>).</summary>
    public static TheoryData<string> NonCudaBackends => [.. Devices.Available.Where(backend => backend != "cuda")];

    [Theory]
    [MemberData(nameof(NonCudaBackends))]
    public void NcclOffCudaIsRefusedOnEveryRankBeforeAnythingStarts(string backend)
    {
        var device = devices.Get(backend);
        var alone = Assert.Throws<ArgumentException>(() => Communicators.Create(new CommunicatorOptions { Kind = CommunicatorKind.Nccl }, device, NoLauncher));
        Assert.Contains($"NCCL reduces CUDA device buffers, but this rank's device is {backend}:", alone.Message);
        Assert.Contains("use the MPI communicator on this backend", alone.Message);
        // Under mpirun too, before MPI starts (the test host could not start it): every rank fails alike, none waits.
        Assert.Throws<ArgumentException>(() => Communicators.Create(
            new CommunicatorOptions { Kind = CommunicatorKind.Nccl }, device, name => name == "OMPI_COMM_WORLD_SIZE" ? "2" : null));
        using var bootstrap = new SingleProcessCommunicator();
        Assert.Throws<ArgumentException>(() => NcclCommunicator.Create(device, bootstrap));
        Assert.Throws<ArgumentNullException>(() => Communicators.Create(new CommunicatorOptions { Kind = CommunicatorKind.Nccl }, null, NoLauncher));
    }

    [NcclFact]
    public void OneRankOfNcclOnACudaDeviceReducesAndBroadcastsInPlace()
    {
        var device = devices.Get("cuda");
        using var communicator = Communicators.Create(new CommunicatorOptions { Kind = CommunicatorKind.Nccl }, device, NoLauncher);
        Assert.IsType<NcclCommunicator>(communicator);
        Assert.StartsWith("NCCL 2.", communicator.Description);
        float[] values = [1f, -2.5f, 3e-8f, 4096f, 0.1f];
        using var buffer = device.Accelerator.Allocate1D(values);
        communicator.AllReduceSum(buffer.View, device);
        communicator.Broadcast(buffer.View, 0, device);
        device.Synchronize();
        Assert.Equal(values, buffer.GetAsArray1D()); // the sum over one rank, and rank 0's buffer
        Assert.Throws<ArgumentOutOfRangeException>(() => communicator.Broadcast(buffer.View, 1, device));
    }
}

/// <summary>Runs where libnccl.so.2 loads and a CUDA device is present (the GPU machine); skipped with the reason elsewhere.</summary>
public sealed class NcclFactAttribute : FactAttribute
{
    public NcclFactAttribute([CallerFilePath] string? sourceFilePath = null, [CallerLineNumber] int sourceLineNumber = -1)
        : base(sourceFilePath, sourceLineNumber)
    {
        if (!NcclLibrary.IsAvailable())
            Skip = $"libnccl.so.2 does not load here (set {NcclLibrary.LibraryVariable} to its path where NCCL is installed).";
        else if (!Devices.Available.Contains("cuda"))
            Skip = "no CUDA device here: NCCL reduces CUDA device buffers.";
    }
}
