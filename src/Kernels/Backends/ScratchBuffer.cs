using ILGPU;
using ILGPU.Runtime;

namespace GpuTransformer.Kernels.Backends;

/// <summary>
/// A kernel family's device scratch (partial sums, split-K partials, flash-decoding partials),
/// grown — never shrunk — when a larger shape first appears, so that after the first call with
/// a shape a launch allocates nothing. One buffer serves every call: launches on the device's
/// one stream run in order. Growing first waits for earlier launches that may still use the
/// old buffer.
/// </summary>
/// <typeparam name="T">Element type.</typeparam>
internal sealed class ScratchBuffer<T>(ComputeDevice device) : IDisposable
    where T : unmanaged
{
    private MemoryBuffer1D<T, Stride1D.Dense>? buffer;

    /// <summary>The first <paramref name="length"/> elements of the scratch (contents undefined).</summary>
    public ArrayView<T> View(long length)
    {
        if (buffer is null || buffer.Length < length)
        {
            device.Synchronize();
            buffer?.Dispose();
            buffer = device.Accelerator.Allocate1D<T>(length);
        }
        return buffer.View.SubView(0, length);
    }

    public void Dispose()
    {
        buffer?.Dispose();
        buffer = null;
    }
}
