using GpuTransformer.Kernels.Backends;
using GpuTransformer.Kernels.Profiling;

namespace GpuTransformer.Layers;

/// <summary>
/// A learnable tensor and its gradient. <see cref="Name"/> is its full PyTorch-style
/// state_dict name (e.g. <c>encoder.layers.0.self_attn.in_proj_weight</c>), set by the
/// module tree it belongs to.
/// </summary>
public sealed class Parameter : IDisposable
{
    internal Parameter(ComputeDevice device, string localName, int[] shape, bool decay)
    {
        LocalName = localName;
        Name = localName;
        Value = new Tensor<float>(device, shape);
        Gradient = new Tensor<float>(device, shape);
        Decay = decay;
    }

    /// <summary>The name inside its module (e.g. <c>weight</c>).</summary>
    public string LocalName { get; }

    /// <summary>The full state_dict name.</summary>
    public string Name { get; internal set; }

    /// <summary>The parameter's values on the device.</summary>
    public Tensor<float> Value { get; }

    /// <summary>∂loss/∂value; layers accumulate into it, the trainer zeroes it each step.</summary>
    public Tensor<float> Gradient { get; }

    /// <summary>Whether AdamW applies weight decay (false for biases, norms and, by choice, embeddings).</summary>
    public bool Decay { get; }

    /// <summary>The pack whose buffers hold this parameter's value and gradient, or null when they are its own.</summary>
    public ParameterPack? Pack { get; internal set; }

    /// <summary>The shape.</summary>
    public IReadOnlyList<int> Shape => Value.Shape;

    /// <inheritdoc/>
    public override string ToString() => $"{Name} {Value}";

    /// <inheritdoc/>
    public void Dispose()
    {
        Value.Dispose();
        Gradient.Dispose();
    }
}

/// <summary>
/// A node of the layer graph, like PyTorch's nn.Module: it owns its parameters, its child
/// modules and the activation buffers its backward needs, and names them so the whole
/// model's state_dict names match PyTorch's. Each concrete layer declares its own
/// <c>Forward</c> and <c>Backward</c> (signatures differ: attention takes masks, the
/// loss takes targets), the backward right after the forward, mirroring it.
/// </summary>
public abstract class Module : IDisposable
{
    private readonly List<(string Name, Module Child)> children = [];
    private readonly List<Parameter> parameters = [];
    private readonly List<IDisposable> buffers = [];
    private ParameterPack? pack;
    private bool training = true;
    private bool disposed;

    /// <summary>A module whose parameters and buffers live on <paramref name="device"/>.</summary>
    protected Module(ComputeDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        Device = device;
    }

    /// <summary>The device everything of this module lives on.</summary>
    public ComputeDevice Device { get; }

    /// <summary>Training mode (dropout active) or evaluation mode; set recursively.</summary>
    public bool Training
    {
        get => training;
        set
        {
            training = value;
            foreach (var (_, child) in children)
                child.Training = value;
        }
    }

    /// <summary>Evaluation mode until the returned scope is disposed, then the mode before it: <c>using (model.EvaluationMode()) { … }</c>.</summary>
    public EvaluationScope EvaluationMode() => new(this);

    /// <summary>Direct children with their local names.</summary>
    public IReadOnlyList<(string Name, Module Child)> Children => children;

    /// <summary>Every parameter of this module and its descendants with its full name, in registration order.</summary>
    public IEnumerable<Parameter> Parameters()
    {
        foreach (var parameter in parameters)
            yield return parameter;
        foreach (var (_, child) in children)
        {
            foreach (var parameter in child.Parameters())
                yield return parameter;
        }
    }

    /// <summary>Number of learnable scalars.</summary>
    public long ParameterCount() => Parameters().Sum(p => (long)p.Value.Length);

    /// <summary>Sets every gradient to zero (call once per optimizer step): one memset once <see cref="PackParameters"/> has run.</summary>
    public void ZeroGradients()
    {
        using var phase = Device.InPhase(ProfilePhase.Optimizer);
        if (pack is not null)
        {
            pack.ZeroGradients();
            return;
        }
        foreach (var parameter in Parameters())
            parameter.Gradient.Zero();
    }

    /// <summary>
    /// Moves every parameter of this subtree into one <see cref="ParameterPack"/> (one value and one
    /// gradient buffer), which this module owns from then on; returns it (the same pack when called again).
    /// The models pack themselves when built.
    /// </summary>
    /// <exception cref="ArgumentException">A parameter of the subtree is already in another pack.</exception>
    public ParameterPack PackParameters() => pack ??= new ParameterPack(Parameters());

    /// <summary>Bytes of device memory held by parameters, gradients and activation buffers of this subtree.</summary>
    public long DeviceBytes()
    {
        long bytes = parameters.Sum(p => 2L * p.Value.Capacity * sizeof(float));
        bytes += buffers.Sum(b => b switch
        {
            Tensor<float> t => t.Capacity * sizeof(float),
            Tensor<int> t => t.Capacity * sizeof(int),
            _ => 0L,
        });
        return bytes + children.Sum(c => c.Child.DeviceBytes());
    }

    /// <summary>
    /// Registers a child under <paramref name="name"/> (its parameters become <c>name.…</c>).
    /// An empty name inlines the child's names into this module's, for modules that exist
    /// in our graph but not in PyTorch's naming (e.g. a FeedForward whose <c>linear1</c>/<c>linear2</c>
    /// sit directly on PyTorch's encoder layer).
    /// </summary>
    protected T Child<T>(string name, T child)
        where T : Module
    {
        ArgumentNullException.ThrowIfNull(child);
        children.Add((name, child));
        child.Rename(name);
        return child;
    }

    /// <summary>Creates a parameter of this module.</summary>
    protected Parameter Parameter(string name, int[] shape, bool decay)
    {
        var parameter = new Parameter(Device, name, shape, decay);
        parameters.Add(parameter);
        return parameter;
    }

    /// <summary>An activation buffer this module owns and reuses (resize it with <see cref="Tensor{T}.Resize"/> per call).</summary>
    protected Tensor<T> Buffer<T>(params int[] shape)
        where T : unmanaged
    {
        var tensor = new Tensor<T>(Device, shape);
        buffers.Add(tensor);
        return tensor;
    }

    private void Rename(string prefix)
    {
        foreach (var parameter in parameters)
            parameter.Name = Join(prefix, parameter.LocalName);
        foreach (var (name, child) in children)
            child.Rename(Join(prefix, name));
    }

    private static string Join(string prefix, string name) =>
        prefix.Length == 0 ? name : name.Length == 0 ? prefix : $"{prefix}.{name}";

    /// <inheritdoc/>
    public void Dispose()
    {
        Dispose(disposing: true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Frees the parameters and buffers (<paramref name="disposing"/>: called from <see cref="Dispose()"/>).</summary>
    protected virtual void Dispose(bool disposing)
    {
        if (disposed || !disposing)
            return;
        disposed = true;
        foreach (var (_, child) in children)
            child.Dispose();
        foreach (var parameter in parameters)
            parameter.Dispose();
        foreach (var buffer in buffers)
            buffer.Dispose();
        pack?.Dispose();
    }
}
