using System.Runtime.CompilerServices;
using ILGPU;

namespace GpuTransformer.Kernels;

// The row-wise kernels of RowTile.CpuLanes (PoCL). PoCL runs a group of one work-item as a plain
// loop over its row, and LLVM vectorises such a loop only where nothing stops it: a float sum or
// max carried from one column to the next is such a stop (it would reorder the additions), and so
// is a call to `exp` (PoCL's is inlined, but scalar). The softmax forward ran at 2 GB/s and the
// cross-entropy over [2048, 8192] at 0.6 GB/s, bound by one scalar exp per column. So these kernels
// - run reductions 8 columns at a time as 8 named lanes (Lanes8: each lane a float of its own
//   with its own running sum or max — the order of additions is fixed by the code, not left to
//   the vectoriser), which LLVM's SLP vectoriser turns into 256-bit instructions; the last
//   C mod 8 columns run one at a time;
// - write element-wise maps (e^x, scaling, the gradient) as plain loops, which LLVM's loop
//   vectoriser widens — provided e^x is LaneMath.Exp, a branch-free polynomial with no library
//   call. (The same exps inside Lanes8 came out as 128-bit pieces glued by shuffles, 4× slower.)

/// <summary>
/// Whether a row kernel writes over its input (the caller passed the same view for both). The
/// in-place instantiation then reads and writes through one view: LLVM vectorises a loop over
/// two pointers behind a runtime check that they do not overlap, and an exact alias fails that
/// check and runs the scalar loop (measured: the in-place cross-entropy stayed scalar).
/// </summary>
internal interface IRowPlacement
{
    bool Aliased { get; }
}

/// <summary>Output and input are one view.</summary>
internal struct SameView : IRowPlacement
{
    public readonly bool Aliased => true;
}

/// <summary>Output and input are disjoint views.</summary>
internal struct SeparateViews : IRowPlacement
{
    public readonly bool Aliased => false;
}

/// <summary>Eight consecutive columns of a row, one float each (see the file's comment).</summary>
internal struct Lanes8
{
    public float A, B, C, D, E, F, G, H;

    /// <summary>Every lane <paramref name="value"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Lanes8 Splat(float value) =>
        new() { A = value, B = value, C = value, D = value, E = value, F = value, G = value, H = value };

    /// <summary>source[index .. index + 8).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Lanes8 Load(ArrayView<float> source, int index) => new()
    {
        A = source[index], B = source[index + 1], C = source[index + 2], D = source[index + 3],
        E = source[index + 4], F = source[index + 5], G = source[index + 6], H = source[index + 7],
    };

    /// <summary>target[index .. index + 8) = this.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Store(ArrayView<float> target, int index)
    {
        target[index] = A;
        target[index + 1] = B;
        target[index + 2] = C;
        target[index + 3] = D;
        target[index + 4] = E;
        target[index + 5] = F;
        target[index + 6] = G;
        target[index + 7] = H;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Lanes8 operator +(Lanes8 x, Lanes8 y) => new()
    {
        A = x.A + y.A, B = x.B + y.B, C = x.C + y.C, D = x.D + y.D,
        E = x.E + y.E, F = x.F + y.F, G = x.G + y.G, H = x.H + y.H,
    };

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Lanes8 operator -(Lanes8 x, Lanes8 y) => new()
    {
        A = x.A - y.A, B = x.B - y.B, C = x.C - y.C, D = x.D - y.D,
        E = x.E - y.E, F = x.F - y.F, G = x.G - y.G, H = x.H - y.H,
    };

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Lanes8 operator *(Lanes8 x, Lanes8 y) => new()
    {
        A = x.A * y.A, B = x.B * y.B, C = x.C * y.C, D = x.D * y.D,
        E = x.E * y.E, F = x.F * y.F, G = x.G * y.G, H = x.H * y.H,
    };

    /// <summary>Lane-wise maximum as the kernels' scalar code takes it: x &gt; y ? x : y (a NaN in y is kept, one in x is not).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Lanes8 Max(Lanes8 x, Lanes8 y) => new()
    {
        A = x.A > y.A ? x.A : y.A, B = x.B > y.B ? x.B : y.B, C = x.C > y.C ? x.C : y.C, D = x.D > y.D ? x.D : y.D,
        E = x.E > y.E ? x.E : y.E, F = x.F > y.F ? x.F : y.F, G = x.G > y.G ? x.G : y.G, H = x.H > y.H ? x.H : y.H,
    };

    /// <summary>e^x per lane (<see cref="LaneMath.Exp"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Lanes8 Exp(Lanes8 x) => new()
    {
        A = LaneMath.Exp(x.A), B = LaneMath.Exp(x.B), C = LaneMath.Exp(x.C), D = LaneMath.Exp(x.D),
        E = LaneMath.Exp(x.E), F = LaneMath.Exp(x.F), G = LaneMath.Exp(x.G), H = LaneMath.Exp(x.H),
    };

    /// <summary>Σ values[start .. start + count): 8 lanes at a time, then the lanes' tree, then the last count mod 8 in order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float SumOf(ArrayView<float> values, int start, int count)
    {
        var lanes = count - count % 8;
        var sum8 = Splat(0f);
        for (var c = 0; c < lanes; c += 8)
            sum8 += Load(values, start + c);
        var sum = sum8.Sum;
        for (var c = lanes; c < count; c++)
            sum += values[start + c];
        return sum;
    }

    /// <summary>The lanes' sum, in a fixed tree order.</summary>
    public readonly float Sum
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => ((A + B) + (C + D)) + ((E + F) + (G + H));
    }

    /// <summary>The lanes' maximum (x &gt; y ? x : y, so NaNs are dropped as by the scalar loops).</summary>
    public readonly float Max8
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => MaxOf(MaxOf(MaxOf(A, B), MaxOf(C, D)), MaxOf(MaxOf(E, F), MaxOf(G, H)));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float MaxOf(float x, float y) => x > y ? x : y;
}

/// <summary>Math for <see cref="Lanes8"/>: straight-line code the vectoriser can widen.</summary>
internal static class LaneMath
{
    /// <summary>Below this e^x is not a normal float: <see cref="Exp"/> returns 0.</summary>
    public const float ExpLowest = -87.33654f;

    /// <summary>Above this e^x overflows: <see cref="Exp"/> returns +∞.</summary>
    public const float ExpHighest = 88.37626f;

    /// <summary>1.5·2²³: adding it to |v| &lt; 2²² rounds v to an integer, held in the low mantissa bits.</summary>
    private const float RoundingShift = 12582912f;

    /// <summary>
    /// e^x within 1.5 ulp for normal results (0.96 ulp the worst of 400,000 arguments against
    /// double precision, LaneMathTests), branch-free: n = round(x·log₂e) (by the 1.5·2²³ shift), r = x − n·ln 2 (ln 2 in two parts so that
    /// n·ln2_hi is exact), e^r by Cephes' degree-5 polynomial (expf.c), times 2ⁿ built in the
    /// exponent bits. Results below the smallest normal float are 0 (as with flush-to-zero), e^−∞
    /// is 0, e^+∞ and anything above <see cref="ExpHighest"/> is +∞, NaN stays NaN.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Exp(float x)
    {
        var clamped = x < ExpLowest ? ExpLowest : x;
        clamped = clamped > ExpHighest ? ExpHighest : clamped;
        // n = round(x·log₂e) by adding and subtracting 1.5·2²³ (no floor, no float→int
        // conversion: both are scalar library code on PoCL); n sits in the low mantissa bits of t.
        var t = clamped * 1.44269504088896341f + RoundingShift;
        var n = t - RoundingShift;
        var r = clamped - n * 0.693359375f;
        r -= n * -2.12194440e-4f;
        var p = 1.9875691500e-4f;
        p = p * r + 1.3981999507e-3f;
        p = p * r + 8.3334519073e-3f;
        p = p * r + 4.1665795894e-2f;
        p = p * r + 1.6666665459e-1f;
        p = p * r + 5.0000001201e-1f;
        p = p * r * r + r + 1f;
        var y = p * Interop.IntAsFloat((Interop.FloatAsInt(t) - Interop.FloatAsInt(RoundingShift) + 127u) << 23);
        y = x < ExpLowest ? 0f : y;
        y = x > ExpHighest ? float.PositiveInfinity : y;
        return float.IsNaN(x) ? x : y;
    }
}
