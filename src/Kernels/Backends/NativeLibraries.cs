using System.Reflection;
using System.Runtime.InteropServices;

namespace GpuTransformer.Kernels.Backends;

/// <summary>
/// ILGPU imports the drivers by their bare names ("OpenCL", "cuda"), so .NET looks for
/// libOpenCL.so / libcuda.so. Driver-only machines ship only the versioned names
/// (libOpenCL.so.1, libcuda.so.1), so we map the bare names to those before the first
/// <see cref="ILGPU.Context"/> is created. A second resolver for one assembly throws,
/// hence the once-only guard.
/// </summary>
internal static class NativeLibraries
{
    private static readonly Lock Gate = new();
    private static bool registered;

    public static void EnsureResolverRegistered()
    {
        lock (Gate)
        {
            if (registered)
                return;
            registered = true;
            try
            {
                NativeLibrary.SetDllImportResolver(typeof(ILGPU.Context).Assembly, Resolve);
            }
            catch (InvalidOperationException)
            {
                // ILGPU registered its own resolver (it does so on WSL); keep it.
            }
        }
    }

    /// <summary>
    /// Loads the driver library ILGPU imports as <paramref name="name"/> ("cuda", "OpenCL") the
    /// way the resolver does; <paramref name="tried"/> lists the file names tried, for messages.
    /// </summary>
    public static bool TryLoadDriver(string name, out IntPtr handle, out string tried)
    {
        var candidates = Candidates(name).ToList();
        tried = string.Join(" or ", candidates.Count > 1 ? candidates.Skip(1) : candidates);
        foreach (var candidate in candidates)
        {
            if (NativeLibrary.TryLoad(candidate, typeof(ILGPU.Context).Assembly, null, out handle))
                return true;
        }
        handle = IntPtr.Zero;
        return false;
    }

    private static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath)
    {
        foreach (var candidate in Candidates(name))
        {
            if (NativeLibrary.TryLoad(candidate, assembly, searchPath, out var handle))
                return handle;
        }
        return IntPtr.Zero; // fall back to the default probing (which reports its own error)
    }

    private static IEnumerable<string> Candidates(string name)
    {
        yield return name;
        if (OperatingSystem.IsLinux())
        {
            switch (name)
            {
                case "OpenCL":
                    yield return "libOpenCL.so";
                    yield return "libOpenCL.so.1";
                    break;
                case "cuda":
                case "nvcuda":
                    yield return "libcuda.so";
                    yield return "libcuda.so.1";
                    break;
            }
        }
        else if (OperatingSystem.IsMacOS() && name == "OpenCL")
        {
            yield return "/System/Library/Frameworks/OpenCL.framework/OpenCL";
        }
    }
}
