using System.Runtime.InteropServices;

namespace GpuTransformer.Training.Distributed;

/// <summary>
/// Loads MPI and NCCL at run time (they are optional: a single process needs neither), so a
/// missing library is one clear error naming what to install rather than a
/// <see cref="DllNotFoundException"/> from deep inside the first collective.
/// </summary>
internal static class CollectiveLibraries
{
    /// <summary>
    /// The first of <paramref name="candidates"/> that loads, or the path in the environment
    /// variable <paramref name="overrideVariable"/> when it is set.
    /// </summary>
    /// <exception cref="CommunicatorException">None loads; the message names the library and <paramref name="install"/>.</exception>
    public static IntPtr Load(string library, string overrideVariable, IReadOnlyList<string> candidates, string install) =>
        TryLoad(overrideVariable, candidates, out var handle, out var tried)
            ? handle
            : throw new CommunicatorException(
                $"{library} was not found (tried {string.Join(", ", tried)}): {install}, or set {overrideVariable} to its path.");

    /// <summary>True when one of the candidates (or the override) loads.</summary>
    public static bool IsAvailable(string overrideVariable, IReadOnlyList<string> candidates) =>
        TryLoad(overrideVariable, candidates, out _, out _);

    private static bool TryLoad(string overrideVariable, IReadOnlyList<string> candidates, out IntPtr handle, out IReadOnlyList<string> tried)
    {
        tried = Environment.GetEnvironmentVariable(overrideVariable) is { Length: > 0 } path ? [path] : candidates;
        handle = IntPtr.Zero;
        foreach (var candidate in tried)
        {
            if (NativeLibrary.TryLoad(candidate, out handle))
                return true;
        }
        return false;
    }

    /// <summary>The address of <paramref name="symbol"/> in <paramref name="handle"/>.</summary>
    /// <exception cref="CommunicatorException">The library lacks it (a version we do not bind).</exception>
    public static IntPtr Export(IntPtr handle, string library, string symbol) =>
        NativeLibrary.TryGetExport(handle, symbol, out var address)
            ? address
            : throw new CommunicatorException($"{library} has no symbol {symbol}: not a version GpuTransformer binds.");
}
