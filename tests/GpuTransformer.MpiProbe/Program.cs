using System.Diagnostics;
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Training.Distributed;
using ILGPU.Runtime;

namespace GpuTransformer.MpiProbe;

/// <summary>
/// <c>gpu-transformer-mpi-probe</c>: what the MPI tests run on every rank (<c>mpirun -np N dotnet
/// gpu-transformer-mpi-probe.dll SCENARIO</c>). Every line it prints starts "rank r/N:"; a scenario
/// that finds a wrong result prints "FAILED: …" and exits 1.
/// </summary>
public static class Program
{
    private const string Usage = """
        gpu-transformer-mpi-probe collectives [--communicator auto|single|mpi|nccl] [--segment FLOATS]
            every collective on known buffers, checked bitwise against the rank-order sum; "ok: …" at the end
        gpu-transformer-mpi-probe mismatch
            rank 1 passes a longer buffer and another config: every rank must get the same clear error
        gpu-transformer-mpi-probe loop [--seconds S] [--fail-rank R --fail-at I --fail-how throw|abort|exit]
            all-reduces until S seconds have passed (default 60), printing its pid and every 100th iteration;
            rank R fails at iteration I as asked (or the test kills a rank)
        """;

    public static int Main(string[] args)
    {
        if (args.Length == 0 || args[0] is "-h" or "--help")
        {
            Console.WriteLine(Usage);
            return args.Length == 0 ? 2 : 0;
        }
        var options = Options(args.Skip(1).ToArray());
        try
        {
            return args[0] switch
            {
                "collectives" => Collectives(options),
                "mismatch" => Mismatch(),
                "loop" => Loop(options),
                _ => throw new ArgumentException($"unknown scenario '{args[0]}'\n{Usage}"),
            };
        }
        catch (Exception e) when (e is CommunicatorException or InvalidOperationException or ArgumentException)
        {
            Console.Out.Flush();
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
    }

    /// <summary>Every collective, every result compared bit for bit with what one process computes.</summary>
    private static int Collectives(Dictionary<string, string> options)
    {
        var kind = Communicators.ParseKind(options.GetValueOrDefault("communicator", "auto"))
            ?? throw new ArgumentException($"--communicator must be one of {string.Join(", ", Communicators.KindNames)}");
        var segment = int.Parse(options.GetValueOrDefault("segment", "1000"));
        using var communicator = Communicators.Create(new CommunicatorOptions { Kind = kind, MpiSegmentFloats = segment });
        var (rank, size) = (communicator.Rank, communicator.Size);
        Say(communicator, $"pid {Environment.ProcessId}: {communicator.Description}");
        int checks = 0, sums = 0, orderSensitive = 0;

        // Host all-reduce: lengths around the segment size (1000 by default) and the split into Size chunks.
        foreach (var length in (int[])[0, 1, 2, 3, 999, 1000, 1001, 2500, 100_003])
        {
            var values = Contribution(rank, length);
            communicator.AllReduceSum(values);
            var expected = RankOrderSum(size, length);
            Require(communicator, $"AllReduceSum of {length} floats", values, expected);
            checks++;
            var reversed = Enumerable.Range(0, size).Reverse().Select(r => Contribution(r, length)).Aggregate(Add);
            sums += length;
            orderSensitive += expected.Where((v, i) => BitConverter.SingleToInt32Bits(v) != BitConverter.SingleToInt32Bits(reversed[i])).Count();
        }

        // Device all-reduce and broadcast through host memory, on ILGPU's CPU accelerator.
        using (var device = ComputeDevice.Create("cpu"))
        {
            const int Length = 1001;
            using var buffer = device.Accelerator.Allocate1D(Contribution(rank, Length));
            communicator.AllReduceSum(buffer.View, device);
            Require(communicator, "AllReduceSum of a device buffer", buffer.GetAsArray1D(), RankOrderSum(size, Length));
            buffer.CopyFromCPU(Contribution(rank, Length));
            communicator.Broadcast(buffer.View, 0, device);
            Require(communicator, "Broadcast of a device buffer from rank 0", buffer.GetAsArray1D(), Contribution(0, Length));
            checks += 2;
        }

        // Host broadcast from the last rank, of floats and of bytes (as NCCL's unique id travels).
        var floats = Contribution(rank, 1001);
        communicator.Broadcast<float>(floats, size - 1);
        Require(communicator, $"Broadcast of floats from rank {size - 1}", floats, Contribution(size - 1, 1001));
        var bytes = Enumerable.Range(0, 128).Select(i => (byte)(i * 7 + rank)).ToArray();
        communicator.Broadcast<byte>(bytes, 0);
        if (!bytes.SequenceEqual(Enumerable.Range(0, 128).Select(i => (byte)(i * 7))))
            return Fail(communicator, "Broadcast of 128 bytes from rank 0 gave other bytes");
        checks += 2;

        // All-gather in rank order.
        var gathered = new int[2 * size];
        communicator.AllGather<int>([rank, rank * rank + 7], gathered);
        if (!gathered.SequenceEqual(Enumerable.Range(0, size).SelectMany(r => new[] { r, r * r + 7 })))
            return Fail(communicator, $"AllGather gave [{string.Join(", ", gathered)}]");
        checks++;

        // Agreement passes when the ranks agree; a root outside the job is refused locally, before any collective.
        communicator.RequireSameOnAllRanks("the probe's config", "the same on every rank");
        try
        {
            communicator.Broadcast<float>(floats, size);
            return Fail(communicator, $"Broadcast from root {size} was accepted");
        }
        catch (ArgumentOutOfRangeException)
        {
        }
        communicator.Barrier();
        checks += 3;
        Say(communicator, $"ok: {checks} checks bitwise; {orderSensitive} of {sums} sums differ when added in reverse rank order");
        return 0;
    }

    /// <summary>Rank 1 passes other lengths and another config: the same error on every rank, and the job goes on.</summary>
    private static int Mismatch()
    {
        using var communicator = Communicators.Create(new CommunicatorOptions { Kind = CommunicatorKind.Mpi });
        try
        {
            communicator.AllReduceSum(new float[communicator.Rank == 1 ? 5 : 4]);
            return Fail(communicator, "AllReduceSum accepted buffers of different lengths");
        }
        catch (CommunicatorException e)
        {
            Say(communicator, $"error as expected: {e.Message}");
        }
        try
        {
            communicator.RequireSameOnAllRanks("the training config", communicator.Rank == 1 ? "d_model=64" : "d_model=128");
            return Fail(communicator, "RequireSameOnAllRanks accepted different configs");
        }
        catch (CommunicatorException e)
        {
            Say(communicator, $"error as expected: {e.Message}");
        }
        communicator.Barrier();
        Say(communicator, "ok: every rank refused both and the job goes on");
        return 0;
    }

    /// <summary>All-reduces in a loop; one rank fails on request, or the test kills one.</summary>
    private static int Loop(Dictionary<string, string> options)
    {
        var seconds = double.Parse(options.GetValueOrDefault("seconds", "60"));
        var failRank = int.Parse(options.GetValueOrDefault("fail-rank", "-1"));
        var failAt = int.Parse(options.GetValueOrDefault("fail-at", "-1"));
        var failHow = options.GetValueOrDefault("fail-how", "throw");
        using var communicator = Communicators.Create(new CommunicatorOptions { Kind = CommunicatorKind.Mpi });
        Say(communicator, $"pid {Environment.ProcessId}");
        var values = new float[10_000];
        var clock = Stopwatch.StartNew();
        for (var iteration = 0; clock.Elapsed.TotalSeconds < seconds; iteration++)
        {
            Array.Fill(values, 1f);
            communicator.AllReduceSum(values);
            if (values[0] != communicator.Size)
                return Fail(communicator, $"iteration {iteration}: sum {values[0]}, expected {communicator.Size}");
            if (iteration % 100 == 0)
                Say(communicator, $"iteration {iteration}");
            if (communicator.Rank == failRank && iteration == failAt)
            {
                switch (failHow)
                {
                    case "throw":
                        throw new InvalidOperationException($"injected failure on rank {failRank} at iteration {iteration}");
                    case "abort":
                        communicator.Abort($"injected abort at iteration {iteration}");
                        break;
                    case "exit":
                        Environment.Exit(3);
                        break;
                    default:
                        throw new ArgumentException($"--fail-how must be throw, abort or exit, not '{failHow}'");
                }
            }
        }
        Say(communicator, $"ok: finished after {clock.Elapsed.TotalSeconds:F0} s");
        return 0;
    }

    /// <summary>Rank <paramref name="rank"/>'s buffer: magnitudes over 2^-12..2^12 and both signs, so the order of a float sum shows in its bits.</summary>
    private static float[] Contribution(int rank, int length)
    {
        var values = new float[length];
        for (var i = 0; i < length; i++)
        {
            var hash = (uint)(i * 2654435761u) ^ (uint)((rank + 1) * 40503u * 97u);
            hash ^= hash >> 13;
            var mantissa = 1f + (hash % 1000) / 1000f;
            values[i] = MathF.ScaleB((hash & 1) == 0 ? mantissa : -mantissa, (int)(hash >> 8) % 25 - 12);
        }
        return values;
    }

    /// <summary>((v₀ + v₁) + v₂) + …: one process adding the ranks' buffers one after another.</summary>
    private static float[] RankOrderSum(int size, int length) =>
        Enumerable.Range(0, size).Select(r => Contribution(r, length)).Aggregate(Add);

    private static float[] Add(float[] sum, float[] addend)
    {
        var result = new float[sum.Length];
        for (var i = 0; i < sum.Length; i++)
            result[i] = sum[i] + addend[i];
        return result;
    }

    private static void Require(ICommunicator communicator, string what, float[] actual, float[] expected)
    {
        for (var i = 0; i < expected.Length; i++)
        {
            if (BitConverter.SingleToInt32Bits(actual[i]) != BitConverter.SingleToInt32Bits(expected[i]))
                throw new InvalidOperationException($"rank {communicator.Rank}/{communicator.Size}: FAILED: {what}: element {i} is {actual[i]:R}, the rank-order sum is {expected[i]:R}");
        }
    }

    private static int Fail(ICommunicator communicator, string problem)
    {
        Say(communicator, $"FAILED: {problem}");
        return 1;
    }

    private static void Say(ICommunicator communicator, string text)
    {
        Console.WriteLine($"rank {communicator.Rank}/{communicator.Size}: {text}");
        Console.Out.Flush();
    }

    private static Dictionary<string, string> Options(string[] args)
    {
        var options = new Dictionary<string, string>();
        for (var i = 0; i + 1 < args.Length; i += 2)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal))
                throw new ArgumentException($"expected an option, got '{args[i]}'\n{Usage}");
            options[args[i][2..]] = args[i + 1];
        }
        return options;
    }
}
