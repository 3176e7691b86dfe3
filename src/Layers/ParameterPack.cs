using GpuTransformer.Kernels.Backends;
using GpuTransformer.Kernels.Profiling;
using ILGPU;
using ILGPU.Runtime;

namespace GpuTransformer.Layers;

/// <summary>
/// The values and the gradients of a set of parameters, each in one contiguous device buffer
/// (llm.c's layout), so that zeroing the gradients is one memset and the optimizer's gradient
/// norm and update are a launch or two over everything instead of a few per tensor. Every
/// parameter's <see cref="Parameter.Value"/> and <see cref="Parameter.Gradient"/> become slices of
/// the two buffers, at offsets that are multiples of <see cref="Alignment"/> floats (the gaps hold
/// zeros, which an AdamW update keeps at zero). The weight-decayed parameters come first, in
/// registration order, then the others: [0, <see cref="DecayedLength"/>) and
/// [<see cref="DecayedLength"/>, <see cref="Length"/>) are one AdamW launch each.
/// <para>
/// <see cref="Module.PackParameters"/> packs a module's parameters (the models do so when built).
/// Disposing the pack gives every parameter that is still alive its own buffers back, values and
/// gradients kept.
/// </para>
/// </summary>
public sealed class ParameterPack : IDisposable
{
    /// <summary>Every parameter starts at a multiple of this many floats (64 bytes: a cache line, and the vector width any kernel asks of a view's offset).</summary>
    public const int Alignment = 16;

    private readonly ComputeDevice device;
    private readonly MemoryBuffer1D<float, Stride1D.Dense> values;
    private readonly MemoryBuffer1D<float, Stride1D.Dense> gradients;
    private readonly Dictionary<Parameter, int> indices = [];
    private readonly Parameter[] parameters;
    private readonly long[] offsets;
    private bool disposed;

    /// <summary>Moves <paramref name="parameters"/> (distinct, all on one device, none in another pack) into one value and one gradient buffer.</summary>
    /// <exception cref="ArgumentException">No parameters, parameters on different devices, or one already in a pack.</exception>
    public ParameterPack(IEnumerable<Parameter> parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        var distinct = parameters.Distinct().ToList();
        if (distinct.Count == 0)
            throw new ArgumentException("A parameter pack needs at least one parameter.", nameof(parameters));
        device = distinct[0].Value.Device;
        foreach (var parameter in distinct)
        {
            if (parameter.Pack is not null)
                throw new ArgumentException($"Parameter '{parameter.Name}' already lives in a parameter pack.", nameof(parameters));
            if (parameter.Value.Device != device)
                throw new ArgumentException($"Parameter '{parameter.Name}' lives on {parameter.Value.Device.Description}, the others on {device.Description}.", nameof(parameters));
        }
        this.parameters = [.. distinct.Where(p => p.Decay), .. distinct.Where(p => !p.Decay)];
        offsets = new long[this.parameters.Length];
        long length = 0;
        for (var i = 0; i < this.parameters.Length; i++)
        {
            offsets[i] = length;
            indices[this.parameters[i]] = i;
            length += AlignUp(this.parameters[i].Value.Length);
        }
        var firstUndecayed = Array.FindIndex(this.parameters, p => !p.Decay);
        DecayedLength = firstUndecayed < 0 ? length : offsets[firstUndecayed];
        Length = length;

        values = device.Accelerator.Allocate1D<float>(length);
        gradients = device.Accelerator.Allocate1D<float>(length);
        values.MemSetToZero(device.Stream);
        gradients.MemSetToZero(device.Stream);
        for (var i = 0; i < this.parameters.Length; i++)
        {
            var parameter = this.parameters[i];
            parameter.Value.MoveInto(values.View.SubView(offsets[i], parameter.Value.Length));
            parameter.Gradient.MoveInto(gradients.View.SubView(offsets[i], parameter.Gradient.Length));
            parameter.Pack = this;
        }
    }

    /// <summary>The parameters in the order they are laid out: the weight-decayed ones first.</summary>
    public IReadOnlyList<Parameter> Parameters => parameters;

    /// <summary>Floats in each buffer, alignment gaps included.</summary>
    public long Length { get; }

    /// <summary>Where the parameters without weight decay begin: every decayed parameter lies in [0, DecayedLength).</summary>
    public long DecayedLength { get; }

    /// <summary>Every value, [<see cref="Length"/>].</summary>
    public ArrayView<float> Values
    {
        get
        {
            ObjectDisposedException.ThrowIf(disposed, this);
            return values.View;
        }
    }

    /// <summary>Every gradient, laid out like <see cref="Values"/>.</summary>
    public ArrayView<float> Gradients
    {
        get
        {
            ObjectDisposedException.ThrowIf(disposed, this);
            return gradients.View;
        }
    }

    /// <summary>Where <paramref name="parameter"/> begins in both buffers.</summary>
    /// <exception cref="ArgumentException">The parameter is not in this pack.</exception>
    public long OffsetOf(Parameter parameter) => offsets[IndexOf(parameter)];

    /// <summary>The position of <paramref name="parameter"/> in <see cref="Parameters"/>.</summary>
    /// <exception cref="ArgumentException">The parameter is not in this pack.</exception>
    public int IndexOf(Parameter parameter)
    {
        ArgumentNullException.ThrowIfNull(parameter);
        return indices.TryGetValue(parameter, out var index)
            ? index
            : throw new ArgumentException($"Parameter '{parameter.Name}' is not in this pack.", nameof(parameter));
    }

    /// <summary>Sets every gradient to zero: one memset.</summary>
    public void ZeroGradients()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        using var profile = device.Profile("Memset", "zero", 0, (double)Length * sizeof(float));
        gradients.View.MemSetToZero(device.Stream);
    }

    /// <summary>Gives the parameters that are still alive their own buffers back, then frees the pack's.</summary>
    public void Dispose()
    {
        if (disposed)
            return;
        disposed = true;
        foreach (var parameter in parameters)
        {
            if (!parameter.Value.IsDisposed)
                parameter.Value.MoveToOwnBuffer();
            if (!parameter.Gradient.IsDisposed)
                parameter.Gradient.MoveToOwnBuffer();
            parameter.Pack = null;
        }
        values.Dispose();
        gradients.Dispose();
    }

    private static long AlignUp(long length) => (length + Alignment - 1) / Alignment * Alignment;
}
