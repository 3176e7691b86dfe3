using GpuTransformer.Kernels.Backends;
using ILGPU;
using ILGPU.Runtime;

namespace GpuTransformer.Kernels;

/// <summary>
/// The paper's sinusoidal positional encoding, PE[pos, 2i] = sin(pos / 10000^(2i/d)),
/// PE[pos, 2i+1] = cos(pos / 10000^(2i/d)) (odd d: the last column is a sin), as a table
/// and fused into the add that follows the embedding.
/// <para>
/// Precision: PyTorch computes the angle pos·ω in float: its table is off by 3·10⁻⁵ for
/// positions below 512 and by 8·10⁻⁴ around 10⁴ (and CUDA's <c>sin.approx</c> is inaccurate
/// outside [−π, π]). Here the angle is
/// reduced exactly: each column pair has its rate ω/2π as a 64-bit fixed-point fraction of a
/// turn (computed on the host in double), pos · rate wraps modulo 2⁶⁴ = one full turn, the
/// phase is folded into [−¼, ¼] turn by integer symmetry, and only then becomes a float angle
/// in [−π/2, π/2] for a degree-13 odd polynomial (no library sin: the same arithmetic on every
/// backend, and cheap on CPUs). Error against the double definition: ≤ 10⁻⁶ for every
/// position below 2³¹ (measured 1.2·10⁻⁷ up to position 10⁶, 3.5·10⁻⁷ near 2³¹ where the
/// double reference's own angle is only good to ~2·10⁻⁷).
/// </para>
/// </summary>
public sealed class PositionalEncodingKernels : IKernelFamily<PositionalEncodingKernels>, IDisposable
{
    /// <summary>A quarter turn in the 64-bit phase: cos(θ) = sin(θ + π/2).</summary>
    private const ulong QuarterTurn = 1UL << 62;

    /// <summary>Half a turn, 2⁶³: sin(½ turn − φ) = sin(φ).</summary>
    private const ulong HalfTurn = 1UL << 63;

    /// <summary>2π / 2⁶⁴: radians per unit of the signed 64-bit phase.</summary>
    private const float RadiansPerPhaseUnit = 3.40612158008655459e-19f;

    private readonly ComputeDevice device;
    private readonly Lock gate = new();
    private readonly Dictionary<int, MemoryBuffer1D<ulong, Stride1D.Dense>> rates = [];
    private readonly int groupSize;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<ulong>, int, int> table;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<ulong>, AddShape> add;

    private PositionalEncodingKernels(ComputeDevice device)
    {
        this.device = device;
        var accelerator = device.Accelerator;
        groupSize = device.Tuning.ElementGroupSize;
        Require.Positive(groupSize, nameof(KernelTuning.ElementGroupSize));
        table = accelerator.LoadKernel<ArrayView<float>, ArrayView<ulong>, int, int>(TableKernel);
        add = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<ulong>, AddShape>(AddKernel);
    }

    /// <inheritdoc/>
    public static PositionalEncodingKernels Create(ComputeDevice device) => new(device);

    /// <inheritdoc/>
    public static IEnumerable<KernelEntry> EntryPoints(KernelTuning tuning) =>
    [
        KernelEntry.Of(TableKernel),
        KernelEntry.Of(AddKernel),
    ];

    /// <summary>table[p, c] = PE[p + positionOffset, c] for p &lt; positions, c &lt; dModel. // [positions, dModel]</summary>
    /// <exception cref="ArgumentException">Non-positive sizes, a negative offset, positions past 2³¹ − 1, or a short view.</exception>
    public void WriteTable(ArrayView<float> table, int positions, int dModel, int positionOffset = 0)
    {
        var count = Require.Product("PE table [positions, dModel]", positions, dModel);
        RequirePositions(positions, positionOffset);
        Require.Holds(table, count, nameof(table), $"[{positions}, {dModel}]");
        using var profile = device.Profile("PositionalEncoding", "table", 0, sizeof(float) * (double)count);
        this.table(device.Stream, RowGrid.Config(positions, dModel, groupSize), table, Rates(dModel), dModel, positionOffset);
    }

    /// <summary>
    /// output[b, t, :] = input[b, t, :] · scale + PE[t + positionOffset, :]. // [batch, sequence, dModel]
    /// Output may alias input. <paramref name="positionOffset"/> is the position of the first
    /// token (the cache length when decoding with a KV cache).
    /// </summary>
    /// <exception cref="ArgumentException">Non-positive sizes, a negative offset, positions past 2³¹ − 1, short views, or views overlapping with a shift.</exception>
    public void Forward(ArrayView<float> output, ArrayView<float> input, int batch, int sequence, int dModel, float scale = 1f, int positionOffset = 0)
    {
        var count = Require.Product("[batch, sequence, dModel]", batch, sequence, dModel);
        RequirePositions(sequence, positionOffset);
        var shape = $"[{batch}, {sequence}, {dModel}]";
        Require.Holds(output, count, nameof(output), shape);
        Require.Holds(input, count, nameof(input), shape);
        (output, input) = (output.SubView(0, count), input.SubView(0, count)); // overlap checks see the used ranges only
        Require.SameOrDisjoint(output, nameof(output), input, nameof(input));
        using var profile = device.Profile("PositionalEncoding", "forward", 0, 2.0 * sizeof(float) * count);
        add(device.Stream, RowGrid.Config(batch * sequence, dModel, groupSize), output, input, Rates(dModel), new AddShape(dModel, sequence, positionOffset, scale));
    }

    /// <summary>
    /// Backward of <see cref="Forward"/>: the encoding is a constant, so dInput = dOutput · scale.
    /// // [batch, sequence, dModel]. dInput may alias dOutput.
    /// </summary>
    /// <exception cref="ArgumentException">Non-positive sizes, short views, or views overlapping with a shift.</exception>
    public void Backward(ArrayView<float> dInput, ArrayView<float> dOutput, int batch, int sequence, int dModel, float scale = 1f)
    {
        var count = Require.Product("[batch, sequence, dModel]", batch, sequence, dModel);
        Require.Holds(dInput, count, nameof(dInput), $"[{batch}, {sequence}, {dModel}]");
        Require.Holds(dOutput, count, nameof(dOutput), $"[{batch}, {sequence}, {dModel}]");
        (dInput, dOutput) = (dInput.SubView(0, count), dOutput.SubView(0, count)); // overlap checks see the used ranges only
        Require.SameOrDisjoint(dInput, nameof(dInput), dOutput, nameof(dOutput));
        device.Kernels<ElementwiseKernels>().Scale(dInput, dOutput, scale, count);
    }

    /// <summary>
    /// Rate of each column pair i = c/2 in turns per position, ω_i/2π with
    /// ω_i = exp(2i · −ln(10000)/d), as a 64-bit fixed-point fraction (2⁶⁴ = one turn).
    /// </summary>
    internal static ulong[] TurnRates(int dModel)
    {
        Require.Positive(dModel, nameof(dModel));
        var result = new ulong[(dModel + 1) / 2];
        var logBase = -Math.Log(10000.0) / dModel;
        for (var i = 0; i < result.Length; i++)
        {
            var turnsPerPosition = Math.Exp(2 * i * logBase) / (2 * Math.PI); // < 1/(2π): fits below 2⁶³
            result[i] = (ulong)Math.Round(turnsPerPosition * 18446744073709551616.0);
        }
        return result;
    }

    /// <summary>PE[position, column] from the device copy of <see cref="TurnRates"/> (inside kernels).</summary>
    internal static float Value(int position, int column, ArrayView<ulong> turnRates)
    {
        // Wraps modulo 2⁶⁴, i.e. whole turns drop out exactly; read signed, the phase is in [−½, ½) turn.
        var phase = (ulong)(uint)position * turnRates[column >> 1] + ((column & 1) != 0 ? QuarterTurn : 0UL);
        var signed = (long)phase;
        if (signed > (long)QuarterTurn || signed < -(long)QuarterTurn)
            signed = (long)(HalfTurn - phase); // ±½ turn − φ (mod 2⁶⁴): same sine, now in [−¼, ¼] turn
        return Sine(signed * RadiansPerPhaseUnit);
    }

    /// <summary>sin(x) for |x| ≤ π/2: Taylor to x¹³ (truncation ≤ 1e-9 there), Horner in x².</summary>
    private static float Sine(float x)
    {
        var x2 = x * x;
        var series = 1f / 6227020800f;
        series = series * x2 - 1f / 39916800f;
        series = series * x2 + 1f / 362880f;
        series = series * x2 - 1f / 5040f;
        series = series * x2 + 1f / 120f;
        series = series * x2 - 1f / 6f;
        return x + x * x2 * series;
    }

    /// <summary>The device copy of <see cref="TurnRates"/> for <paramref name="dModel"/> (uploaded once per size, then cached).</summary>
    internal ArrayView<ulong> Rates(int dModel)
    {
        lock (gate)
        {
            if (!rates.TryGetValue(dModel, out var buffer))
            {
                buffer = device.Accelerator.Allocate1D(device.Stream, TurnRates(dModel));
                rates[dModel] = buffer;
            }
            return buffer.View;
        }
    }

    /// <summary>Positions offset … offset + count − 1 must be non-negative 32-bit integers.</summary>
    internal static void RequirePositions(int count, int positionOffset)
    {
        Require.NonNegative(positionOffset, nameof(positionOffset));
        if ((long)positionOffset + count - 1 > int.MaxValue)
        {
            throw new ArgumentException(
                $"Positions {positionOffset} … {(long)positionOffset + count - 1} exceed {int.MaxValue}.", nameof(positionOffset));
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        lock (gate)
        {
            foreach (var buffer in rates.Values)
                buffer.Dispose();
            rates.Clear();
        }
    }

    /// <summary>Sizes of the fused add, packed to keep the kernel signature short.</summary>
    internal readonly record struct AddShape(int DModel, int Sequence, int PositionOffset, float Scale);

    // One thread per (position p, column c).
    private static void TableKernel(ArrayView<float> table, ArrayView<ulong> turnRates, int dModel, int positionOffset)
    {
        var (p, c) = (RowGrid.Row, RowGrid.Column);
        if (c < dModel)
            table[p * dModel + c] = Value(p + positionOffset, c, turnRates);
    }

    // One thread per (row b·T + t, column c).
    private static void AddKernel(ArrayView<float> output, ArrayView<float> input, ArrayView<ulong> turnRates, AddShape shape)
    {
        var (row, c) = (RowGrid.Row, RowGrid.Column);
        if (c >= shape.DModel)
            return;
        var index = row * shape.DModel + c;
        output[index] = input[index] * shape.Scale + Value(row % shape.Sequence + shape.PositionOffset, c, turnRates);
    }
}
