using System.Security.Cryptography;
using System.Text;

namespace GpuTransformer.Training.Distributed;

/// <summary>
/// Checks that every rank holds the same value — buffer lengths before a collective, configs and
/// corpora before training — and fails on every rank with the same message when one differs, so
/// no rank goes on alone into a collective the others never enter.
/// </summary>
internal static class RankAgreement
{
    /// <summary>Throws a <see cref="CommunicatorException"/> on every rank unless all ranks pass the same <paramref name="value"/>; the message lists each rank's value.</summary>
    /// <param name="communicator">The job.</param>
    /// <param name="what">What the value is, for the message (e.g. "the length of the buffer passed to AllReduceSum").</param>
    /// <param name="value">This rank's value.</param>
    public static void RequireSameOnAllRanks(this ICommunicator communicator, string what, long value)
    {
        ArgumentNullException.ThrowIfNull(communicator);
        if (communicator.Size == 1)
            return;
        var all = new long[communicator.Size];
        communicator.AllGather<long>([value], all);
        if (all.Any(v => v != all[0]))
            throw new CommunicatorException(
                $"rank {communicator.Rank}/{communicator.Size}: the ranks disagree on {what}: " +
                string.Join(", ", all.Select((v, rank) => $"rank {rank} has {v}")) + "; every rank must pass the same.");
    }

    /// <summary>
    /// Throws a <see cref="CommunicatorException"/> on every rank unless all ranks pass the same
    /// <paramref name="value"/> (compared by SHA-256, so configs and corpus fingerprints of any
    /// size cost one 32-byte all-gather); the message names the ranks that differ from rank 0.
    /// </summary>
    public static void RequireSameOnAllRanks(this ICommunicator communicator, string what, string value)
    {
        ArgumentNullException.ThrowIfNull(communicator);
        ArgumentNullException.ThrowIfNull(value);
        if (communicator.Size == 1)
            return;
        const int HashBytes = 32;
        var all = new byte[communicator.Size * HashBytes];
        communicator.AllGather<byte>(SHA256.HashData(Encoding.UTF8.GetBytes(value)), all);
        var differing = Enumerable.Range(1, communicator.Size - 1)
            .Where(rank => !all.AsSpan(rank * HashBytes, HashBytes).SequenceEqual(all.AsSpan(0, HashBytes))).ToList();
        if (differing.Count > 0)
            throw new CommunicatorException(
                $"rank {communicator.Rank}/{communicator.Size}: the ranks disagree on {what}: " +
                $"rank{(differing.Count > 1 ? "s" : "")} {string.Join(", ", differing)} differ{(differing.Count > 1 ? "" : "s")} from rank 0; every rank must pass the same.");
    }
}
