using GpuTransformer.Kernels.Backends;
using GpuTransformer.Layers;
using ILGPU;
using ILGPU.Runtime;

namespace GpuTransformer.Training.Distributed;

/// <summary>
/// Sums the parameter gradients over the ranks, in buckets: the gradients are packed, in reverse
/// parameter order (the order the backward finishes them, as PyTorch DDP does), into device
/// buffers of about <see cref="DataParallelOptions.BucketFloats"/> floats each; each bucket is one
/// <see cref="ICommunicator.AllReduceSum(ILGPU.ArrayView{float}, ComputeDevice)"/> (NCCL reduces it
/// on the device, MPI through one host copy) and is unpacked into the gradients. A parameter larger
/// than a bucket gets a bucket of its own. Runs after the step's last backward: no overlap with
/// the backward (the layers do not report when a gradient is final).
/// <para>Keeps: the bucket buffers (one extra gradient-sized allocation on the device), allocated once.</para>
/// </summary>
internal sealed class GradientReducer : IDisposable
{
    private readonly ICommunicator communicator;
    private readonly ComputeDevice device;
    private readonly List<(MemoryBuffer1D<float, ILGPU.Stride1D.Dense> Buffer, Parameter[] Parameters)> buckets = [];

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
    public int BucketCount => buckets.Count;

    /// <summary>Gradient floats reduced per step.</summary>
    public long Floats { get; }

    /// <summary>Replaces every parameter's gradient on every rank with its sum over the ranks (after the work queued on the device).</summary>
    public void AllReduce()
    {
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
}
