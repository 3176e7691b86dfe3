using System.Reflection;
using ILGPU.Runtime;

namespace GpuTransformer.Kernels.Backends;

/// <summary>
/// Device memory a <see cref="ComputeDevice"/> holds right now, counted from the accelerator's
/// own list of live buffers — every buffer allocated through ILGPU, whoever owns it (tensors,
/// optimizer moments, kernel families' scratch) — rather than from what the owners report. For
/// measurements and tests (docs/memory.md), not for hot paths: it reads a private list of
/// ILGPU 1.5.3 by reflection and walks every object the accelerator has created.
/// </summary>
public static class DeviceAllocations
{
    // Accelerator.childObjects: weak references to every AcceleratorObject (buffers, streams, kernels) it created.
    private static readonly FieldInfo? Children = typeof(Accelerator).GetField("childObjects", BindingFlags.NonPublic | BindingFlags.Instance);
    private static readonly FieldInfo? Gate = typeof(Accelerator).GetField("syncRoot", BindingFlags.NonPublic | BindingFlags.Instance);

    /// <summary>Bytes of the live (not disposed) device buffers of <paramref name="device"/>.</summary>
    /// <exception cref="NotSupportedException">This ILGPU version does not keep the list this reads.</exception>
    public static long HeldBytes(ComputeDevice device) => Buffers(device).Sum();

    /// <summary>The sizes in bytes of the live device buffers, one entry per allocation.</summary>
    /// <exception cref="NotSupportedException">This ILGPU version does not keep the list this reads.</exception>
    public static IReadOnlyList<long> Buffers(ComputeDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        var accelerator = device.Accelerator;
        // Buffers nobody references any more (ILGPU's CPU runtime drops some per launch) are freed by their finalizers: run them first.
        GC.Collect();
        GC.WaitForPendingFinalizers();
        if (Children?.GetValue(accelerator) is not List<WeakReference<AcceleratorObject>> || Gate?.GetValue(accelerator) is not { } gate)
            throw new NotSupportedException("ILGPU's Accelerator has no childObjects list here (DeviceAllocations reads ILGPU 1.5.3's internals).");
        List<WeakReference<AcceleratorObject>> snapshot;
        lock (gate)
            snapshot = [.. (List<WeakReference<AcceleratorObject>>)Children.GetValue(accelerator)!];
        var sizes = new List<long>();
        foreach (var reference in snapshot)
        {
            // A MemoryBuffer<TView> (what Allocate1D returns) wraps a raw backend buffer that is registered too: count the raw one.
            if (reference.TryGetTarget(out var child) && child is MemoryBuffer buffer && !buffer.IsDisposed && !IsViewWrapper(buffer.GetType()))
                sizes.Add(buffer.LengthInBytes);
        }
        return sizes;
    }

    private static bool IsViewWrapper(Type? type)
    {
        for (; type is not null; type = type.BaseType)
        {
            if (type.IsGenericType && type.GetGenericTypeDefinition() == typeof(MemoryBuffer<>))
                return true;
        }
        return false;
    }
}
