using System.Runtime.CompilerServices;
using GpuTransformer.Kernels;
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Kernels.Profiling;
using ILGPU;
using ILGPU.Runtime;

namespace GpuTransformer.Layers;

/// <summary>
/// A tensor on a device: one buffer and a row-major shape. It owns its memory
/// (<see cref="IDisposable"/>), except while a <see cref="ParameterPack"/> holds its elements
/// in the pack's contiguous buffer. Layers keep their activations in tensors they reuse
/// from step to step: <see cref="Resize"/> changes the shape in place and reallocates
/// only when the new shape needs more elements than ever before.
/// </summary>
/// <typeparam name="T">float for values, int for token ids and masks.</typeparam>
public sealed class Tensor<T> : IDisposable
    where T : unmanaged
{
    private MemoryBuffer1D<T, Stride1D.Dense>? buffer; // null while the elements live in a pack's buffer
    private ArrayView<T> storage;                       // buffer's view, or the pack's slice
    private int[] shape;
    private bool disposed;

    /// <summary>A zero-filled tensor of <paramref name="shape"/>.</summary>
    public Tensor(ComputeDevice device, params int[] shape)
    {
        ArgumentNullException.ThrowIfNull(device);
        Device = device;
        this.shape = CheckedShape(shape);
        Length = Require.Product(Describe(this.shape), this.shape);
        buffer = device.Accelerator.Allocate1D<T>(Length);
        buffer.MemSetToZero(device.Stream);
        storage = buffer.View;
        TensorAllocations.Count();
    }

    /// <summary>The device that holds the data.</summary>
    public ComputeDevice Device { get; }

    /// <summary>The shape, outermost dimension first.</summary>
    public IReadOnlyList<int> Shape => shape;

    /// <summary>Number of elements (product of the shape).</summary>
    public int Length { get; private set; }

    /// <summary>Elements the buffer can hold without reallocating.</summary>
    public long Capacity => storage.Length;

    /// <summary>Number of dimensions.</summary>
    public int Rank => shape.Length;

    /// <summary>Whether <see cref="Dispose"/> has freed the buffer (a layer that remembers a tensor it does not own checks this before reading it).</summary>
    internal bool IsDisposed => disposed;

    /// <summary>The elements, as a view of exactly <see cref="Length"/> elements.</summary>
    public ArrayView<T> View
    {
        get
        {
            ObjectDisposedException.ThrowIf(disposed, this);
            return storage.SubView(0, Length);
        }
    }

    /// <summary>Size of dimension <paramref name="dimension"/> (negative counts from the end).</summary>
    public int Dim(int dimension) => shape[dimension < 0 ? shape.Length + dimension : dimension];

    /// <summary>A tensor holding <paramref name="values"/>.</summary>
    public static Tensor<T> FromArray(ComputeDevice device, T[] values, params int[] shape)
    {
        ArgumentNullException.ThrowIfNull(values);
        var tensor = new Tensor<T>(device, shape);
        tensor.CopyFrom(values);
        return tensor;
    }

    /// <summary>
    /// Gives the tensor a new shape, keeping the buffer when it is large enough (contents
    /// are then unspecified) and reallocating otherwise. Returns this tensor.
    /// </summary>
    public Tensor<T> Resize(params int[] newShape)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        var checkedShape = CheckedShape(newShape);
        var length = Require.Product(Describe(checkedShape), checkedShape);
        if (length > storage.Length)
        {
            if (buffer is null)
                throw new InvalidOperationException($"A tensor whose elements live in a parameter pack cannot grow beyond its {storage.Length} elements (asked for {Describe(checkedShape)}).");
            buffer.Dispose();
            buffer = Device.Accelerator.Allocate1D<T>(length);
            buffer.MemSetToZero(Device.Stream);
            storage = buffer.View;
            TensorAllocations.Count();
        }
        shape = checkedShape;
        Length = length;
        return this;
    }

    /// <summary>
    /// Gives the tensor <paramref name="like"/>'s shape with the last dimension replaced by
    /// <paramref name="last"/> (e.g. a linear layer's output [B, T, out] for an input [B, T, in]).
    /// </summary>
    public Tensor<T> ResizeLike<TOther>(Tensor<TOther> like, int last)
        where TOther : unmanaged
    {
        ArgumentNullException.ThrowIfNull(like);
        var newShape = like.shape.ToArray();
        newShape[^1] = last;
        return Resize(newShape);
    }

    /// <summary>Whether the shape equals <paramref name="other"/>.</summary>
    public bool HasShape(params int[] other) => shape.AsSpan().SequenceEqual(other);

    /// <summary>Throws an ArgumentException naming both shapes unless the shape is <paramref name="expected"/>.</summary>
    public void RequireShape(string name, params int[] expected)
    {
        if (!HasShape(expected))
            throw new ArgumentException($"{name} has shape {this} but {Describe(expected)} is required.", name);
    }

    /// <summary>Copies host values in; their count must equal <see cref="Length"/>.</summary>
    public void CopyFrom(ReadOnlySpan<T> values)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if (values.Length != Length)
            throw new ArgumentException($"Got {values.Length} values for a tensor of shape {this} ({Length} elements).", nameof(values));
        using var profile = Device.ProfileHost(ProfileRowKind.Upload, "tensor", (double)Length * Unsafe.SizeOf<T>());
        View.CopyFromCPU(Device.Stream, values.ToArray());
    }

    /// <summary>Copies another tensor's values in (same length).</summary>
    public void CopyFrom(Tensor<T> source)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (source.Length != Length)
            throw new ArgumentException($"Cannot copy a tensor of shape {source} into one of shape {this}.", nameof(source));
        using var profile = Device.Profile("Copy", "device to device", 0, 2.0 * Length * Unsafe.SizeOf<T>());
        View.CopyFrom(Device.Stream, source.View);
    }

    /// <summary>Waits for the device and returns the values.</summary>
    public T[] ToArray()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        Device.Synchronize();
        using var profile = Device.ProfileHost(ProfileRowKind.ReadBack, "tensor", (double)Length * Unsafe.SizeOf<T>());
        var values = new T[Length];
        View.CopyToCPU(Device.Stream, values);
        Device.Synchronize();
        return values;
    }

    /// <summary>Sets every element to zero.</summary>
    public void Zero()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        using var profile = Device.Profile("Memset", "zero", 0, (double)Length * Unsafe.SizeOf<T>());
        View.MemSetToZero(Device.Stream);
    }

    /// <summary>The shape as text, e.g. <c>[2, 16, 64]</c>.</summary>
    public override string ToString() => Describe(shape);

    /// <summary>
    /// Moves the elements into <paramref name="slice"/> (exactly <see cref="Length"/> elements of a
    /// buffer someone else owns) and frees this tensor's own buffer; the tensor reads and writes the
    /// slice from now on, until <see cref="MoveToOwnBuffer"/>.
    /// </summary>
    internal void MoveInto(ArrayView<T> slice)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if (buffer is null)
            throw new InvalidOperationException("The tensor's elements already live in another buffer.");
        if (slice.Length != Length)
            throw new ArgumentException($"A slice of {slice.Length} elements cannot hold a tensor of shape {this}.", nameof(slice));
        slice.CopyFrom(Device.Stream, View);
        Device.Synchronize(); // the copy reads the buffer freed below
        buffer.Dispose();
        buffer = null;
        storage = slice;
    }

    /// <summary>Gives the tensor its own buffer again, with the elements it holds in the borrowed slice.</summary>
    internal void MoveToOwnBuffer()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if (buffer is not null)
            return;
        var own = Device.Accelerator.Allocate1D<T>(Length);
        own.View.CopyFrom(Device.Stream, View);
        Device.Synchronize(); // the slice's owner frees it next
        TensorAllocations.Count();
        buffer = own;
        storage = own.View;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (disposed)
            return;
        disposed = true;
        buffer?.Dispose();
        storage = default;
    }

    /// <summary>Whether the shape equals <paramref name="other"/>'s.</summary>
    public bool HasShapeOf<TOther>(Tensor<TOther> other)
        where TOther : unmanaged
    {
        ArgumentNullException.ThrowIfNull(other);
        return HasShape(other.shape);
    }

    /// <summary>A shape as text.</summary>
    public static string Describe(IEnumerable<int> shape) => $"[{string.Join(", ", shape)}]";

    private static int[] CheckedShape(int[] shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        if (shape.Length == 0)
            return [1];
        foreach (var size in shape)
        {
            if (size <= 0)
                throw new ArgumentException($"Tensor shape {Describe(shape)} has a dimension ≤ 0.", nameof(shape));
        }
        return (int[])shape.Clone();
    }
}

/// <summary>
/// Counts device allocations made by <see cref="Tensor{T}"/> (construction, and
/// <see cref="Tensor{T}.Resize"/> when it has to grow), so tests and the trainer can check that
/// steps after the first with a given shape allocate nothing.
/// </summary>
internal static class TensorAllocations
{
    private static long total;

    /// <summary>Device buffers allocated by tensors since the process started.</summary>
    public static long Total => Interlocked.Read(ref total);

    internal static void Count() => Interlocked.Increment(ref total);
}
