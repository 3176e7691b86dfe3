using GpuTransformer.Kernels.Backends;
using GpuTransformer.Layers;
using ILGPU;
using ILGPU.Runtime;

namespace GpuTransformer.Training.Distributed;

/// <summary>
/// Sums the parameter gradients over the ranks, in buckets of about
/// <see cref="DataParallelOptions.BucketFloats"/> floats, in reverse parameter order (the order the
/// backward finishes them, as PyTorch DDP does); each bucket is one
/// <see cref="ICommunicator.AllReduceSum(ILGPU.ArrayView{float}, ComputeDevice)"/> (NCCL reduces it
/// on the device, MPI through one host copy). When the parameters are exactly one
/// <see cref="ParameterPack"/> (a model's), a bucket is a contiguous range of the pack's gradient
/// buffer, reduced in place: no copies. Otherwise the gradients are packed into bucket buffers and
/// unpacked after the reduction. A parameter larger than a bucket gets a bucket of its own. Runs
/// after the step's last backward: no overlap with the backward (the layers do not report when a
/// gradient is final).
/// <para>Keeps: for unpacked parameters, the bucket buffers (one extra gradient-sized allocation on the device), allocated once; nothing for a pack.</para>
/// </summary>
internal sealed class GradientReducer : IDisposable
{
    private readonly ICommunicator communicator;
    private readonly ComputeDevice device;
    private readonly List<(MemoryBuffer1D<float, ILGPU.Stride1D.Dense> Buffer, Parameter[] Parameters)> buckets = [];
    private readonly ParameterPack? pack;
    private readonly List<(long Start, long Length)> packRanges = []; // buckets of the pack's gradient buffer

    /// <param name="communicator">The job.</param>
    /// <param name="parameters">The model's parameters (all on one device).</param>
    /// <param name="bucketFloats">Floats per bucket (a larger parameter gets a bucket of its own).</param>
    public GradientReducer(ICommunicator communicator, IReadOnlyList<Parameter> parameters, int bucketFloats)
    {
        ArgumentNullException.ThrowIfNull(communicator);
        ArgumentNullException.ThrowIfNull(parameters);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bucketFloats);
        if (parameters.Count == 0)
            throw new ArgumentException("A model without parameters has no gradients to reduce.", nameof(parameters));
        this.communicator = communicator;
        device = parameters[0].Value.Device;
        pack = parameters[0].Pack;
        if (pack is not null && parameters.All(p => p.Pack == pack) && parameters.Distinct().Count() == pack.Parameters.Count)
        {
            BucketPackRanges(pack, bucketFloats);
            Floats = pack.Length;
            return;
        }
        pack = null;
        var current = new List<Parameter>();
        long floats = 0;
        foreach (var parameter in parameters.Reverse())
        {
            if (parameter.Gradient.Device != device)
                throw new ArgumentException($"Parameter '{parameter.Name}' lives on {parameter.Gradient.Device.Description}, the others on {device.Description}.", nameof(parameters));
            if (current.Count > 0 && floats + parameter.Gradient.Length > bucketFloats)
            {
                AddBucket(current, floats);
                (current, floats) = ([], 0);
            }
            current.Add(parameter);
            floats += parameter.Gradient.Length;
        }
        AddBucket(current, floats);
        Floats = buckets.Sum(b => b.Buffer.Length);
    }

    /// <summary>Buckets, i.e. all-reduce calls per step.</summary>
    public int BucketCount => pack is null ? buckets.Count : packRanges.Count;

    /// <summary>Whether the buckets are ranges of a parameter pack's gradient buffer, reduced in place.</summary>
    public bool InPlace => pack is not null;

    /// <summary>Gradient floats reduced per step (for a pack, with its alignment gaps).</summary>
    public long Floats { get; }

    /// <summary>Replaces every parameter's gradient on every rank with its sum over the ranks (after the work queued on the device).</summary>
    public void AllReduce()
    {
        if (pack is not null)
        {
            foreach (var (start, length) in packRanges)
                communicator.AllReduceSum(pack.Gradients.SubView(start, length), device);
            return;
        }
        var stream = device.Stream;
        foreach (var (buffer, parameters) in buckets)
        {
            ArrayView<float> bucket = buffer.View;
            long offset = 0;
            foreach (var p in parameters)
            {
                bucket.SubView(offset, p.Gradient.Length).CopyFrom(stream, p.Gradient.View);
                offset += p.Gradient.Length;
            }
            communicator.AllReduceSum(bucket, device);
            offset = 0;
            foreach (var p in parameters)
            {
                p.Gradient.View.CopyFrom(stream, bucket.SubView(offset, p.Gradient.Length));
                offset += p.Gradient.Length;
            }
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var (buffer, _) in buckets)
            buffer.Dispose();
        buckets.Clear();
    }

    private void AddBucket(List<Parameter> parameters, long floats) =>
        buckets.Add((device.Accelerator.Allocate1D<float>(floats), parameters.ToArray()));

    /// <summary>The pack's gradient buffer cut at parameter boundaries into ranges of about <paramref name="bucketFloats"/>, from its end.</summary>
    private void BucketPackRanges(ParameterPack packed, int bucketFloats)
    {
        var end = packed.Length;
        var start = end;
        for (var i = packed.Parameters.Count - 1; i >= 0; i--)
        {
            var offset = packed.OffsetOf(packed.Parameters[i]);
            if (start < end && end - offset > bucketFloats)
            {
                packRanges.Add((start, end - start));
                end = start;
            }
            start = offset;
        }
        packRanges.Add((start, end - start));
    }
}
