using System.Runtime.InteropServices;

namespace GpuTransformer.Training.Distributed;

/// <summary>The argument checks and shutdown rule every communicator shares.</summary>
internal static class CollectiveRules
{
    /// <summary>Throws unless <paramref name="root"/> is a rank of a job of <paramref name="size"/> ranks.</summary>
    public static void CheckRoot(int root, int size)
    {
        if (root < 0 || root >= size)
            throw new ArgumentOutOfRangeException(nameof(root), root, $"root {root} is not a rank of this job (ranks 0..{size - 1}).");
    }

    /// <summary>Throws unless <paramref name="all"/> holds exactly <paramref name="size"/> × <paramref name="mine"/> elements.</summary>
    public static void CheckAllGather(int mine, int all, int size)
    {
        if ((long)mine * size != all)
            throw new ArgumentException($"AllGather of {mine} elements per rank over {size} ranks needs a result of {(long)mine * size} elements, not {all}.", nameof(all));
    }

    /// <summary>
    /// True while an exception propagates through the caller (a <c>Dispose</c> in a <c>using</c>
    /// being unwound, or code inside a <c>catch</c>). A communicator disposed then must not wait for
    /// the other ranks — they may be inside a collective this rank will never enter, and
    /// MPI_Finalize would wait for them forever (seen with Open MPI 4.1: a rank that finalized while
    /// the other sat in an all-reduce hung until killed).
    /// Marshal.GetExceptionPointers answers this on Linux as on Windows in .NET 10 (the
    /// end-to-end MPI tests would hang without it).
    /// </summary>
    public static bool ExceptionInFlight => Marshal.GetExceptionPointers() != IntPtr.Zero;

    /// <summary>Writes "rank r/N: reason" to stderr, where a launcher's log shows which rank said it.</summary>
    public static void Announce(int rank, int size, string reason)
    {
        Console.Out.Flush();
        Console.Error.WriteLine($"rank {rank}/{size}: {reason}");
        Console.Error.Flush();
    }
}
