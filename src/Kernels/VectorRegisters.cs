using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using GpuTransformer.Kernels.Backends;
using ILGPU;

namespace GpuTransformer.Kernels;

// Register tiles of 128-bit vectors for the GPU kernels (matmul, attention, row-wise). Two
// things make GPU code fast that ILGPU 1.5.3 gives only when asked in the right shape:
// - 128-bit loads and stores: ILGPU's PTX backend emits ld/st .v4 for a 16-byte struct when it
//   can prove 16-byte alignment (PointerAlignments: a shared allocation of Float4, or a view
//   marked AsAligned(16)); a float-by-float copy stays four scalar accesses.
// - Registers: ILGPU does not unroll loops (LoopUnrolling is disabled, ILGPU #1353), so an
//   accumulator array indexed in a loop becomes .local (off-chip) memory. As in
//   MatmulRegisters.cs, a row of registers is a tree of structs (VectorPair<Float4> is 8
//   floats) whose recursion is over types: every access is to a named field, ILGPU inlines
//   the calls and each leaf field becomes a register.
// A micro-tile is four such rows (Tile4): the GPU kernels' products all run on 4-row tiles.

/// <summary>Four consecutive floats: one 128-bit register group, loaded and stored with one instruction where aligned.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct Float4 : IVectorRow<Float4>
{
    public float X;
    public float Y;
    public float Z;
    public float W;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Float4(float x, float y, float z, float w)
    {
        X = x;
        Y = y;
        Z = z;
        W = w;
    }

    public readonly int Length => 4;

    /// <summary>X + Y + Z + W.</summary>
    public readonly float Sum
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => (X + Y) + (Z + W);
    }

    /// <summary>The largest of the four.</summary>
    public readonly float Max
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => MathF.Max(MathF.Max(X, Y), MathF.Max(Z, W));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Load(ArrayView<Float4> tile, int offset, int stride) => this = tile[offset];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Store(ArrayView<Float4> tile, int offset, int stride) => tile[offset] = this;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void MultiplyAdd(float a, Float4 b)
    {
        X = FusedMath.MultiplyAdd(a, b.X, X);
        Y = FusedMath.MultiplyAdd(a, b.Y, Y);
        Z = FusedMath.MultiplyAdd(a, b.Z, Z);
        W = FusedMath.MultiplyAdd(a, b.W, W);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Scale(float s)
    {
        X *= s;
        Y *= s;
        Z *= s;
        W *= s;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Visit<TVisitor>(ref TVisitor visitor, int row, int column, int stride)
        where TVisitor : struct, IFloat4Visitor => visitor.Visit(row, column, this);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Map<TMapper>(ref TMapper mapper, Float4 other, int row, int column, int stride)
        where TMapper : struct, IFloat4Mapper => this = mapper.Map(row, column, this, other);
}

/// <summary>Computes new values for the 128-bit groups of a register row (see <see cref="IVectorRow{TSelf}.Map"/>).</summary>
internal interface IFloat4Mapper
{
    /// <summary>The new value of columns [column, column + 4) of <paramref name="row"/>, from the old one and the same group of another row.</summary>
    Float4 Map(int row, int column, Float4 value, Float4 other);
}

/// <summary>Whether a kernel instantiation may read and write global memory 128 bits at a time.</summary>
internal interface IGlobalAccess
{
    bool Vector { get; }
}

/// <summary>Scalar global accesses: any offsets and leading dimensions.</summary>
internal struct ScalarAccess : IGlobalAccess
{
    public readonly bool Vector => false;
}

/// <summary>128-bit global accesses where four elements are inside: every row 16-byte aligned.</summary>
internal struct VectorAccess : IGlobalAccess
{
    public readonly bool Vector => true;
}

/// <summary>Receives the 128-bit groups of register rows with the row and first column each covers (see <see cref="IVectorRow{TSelf}.Visit"/>).</summary>
internal interface IFloat4Visitor
{
    /// <summary>Columns [column, column + 4) of <paramref name="row"/> hold <paramref name="value"/>.</summary>
    void Visit(int row, int column, Float4 value);
}

/// <summary>
/// A row of registers made of 128-bit groups (<see cref="Float4"/> leaves). Group g of the row
/// lives at <c>tile[offset + g·stride]</c> in a <see cref="Float4"/> view, i.e. columns
/// [4·(offset + g·stride), +4) of the float row, so a thread can own interleaved groups.
/// </summary>
internal interface IVectorRow<TSelf>
    where TSelf : struct, IVectorRow<TSelf>
{
    /// <summary>Number of floats (4 × groups; a constant of the type).</summary>
    int Length { get; }

    /// <summary>Group g = tile[offset + g·stride]: one 128-bit load each.</summary>
    void Load(ArrayView<Float4> tile, int offset, int stride);

    /// <summary>tile[offset + g·stride] = group g: one 128-bit store each.</summary>
    void Store(ArrayView<Float4> tile, int offset, int stride);

    /// <summary>this[j] += a · b[j].</summary>
    void MultiplyAdd(float a, TSelf b);

    /// <summary>this[j] *= s.</summary>
    void Scale(float s);

    /// <summary>Calls <paramref name="visitor"/> with each group, <paramref name="row"/> and the group's first column, <c>column + 4·g·stride</c>.</summary>
    void Visit<TVisitor>(ref TVisitor visitor, int row, int column, int stride)
        where TVisitor : struct, IFloat4Visitor;

    /// <summary>Group g = mapper.Map(row, its first column, group g, group g of <paramref name="other"/>), columns as for <see cref="Visit"/>.</summary>
    void Map<TMapper>(ref TMapper mapper, TSelf other, int row, int column, int stride)
        where TMapper : struct, IFloat4Mapper;
}

/// <summary>A register row of two halves.</summary>
internal struct VectorPair<THalf> : IVectorRow<VectorPair<THalf>>
    where THalf : struct, IVectorRow<THalf>
{
    public THalf Low;
    public THalf High;

    public readonly int Length => 2 * default(THalf).Length;

    private static int HalfGroups => default(THalf).Length / 4;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Load(ArrayView<Float4> tile, int offset, int stride)
    {
        Low.Load(tile, offset, stride);
        High.Load(tile, offset + HalfGroups * stride, stride);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Store(ArrayView<Float4> tile, int offset, int stride)
    {
        Low.Store(tile, offset, stride);
        High.Store(tile, offset + HalfGroups * stride, stride);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void MultiplyAdd(float a, VectorPair<THalf> b)
    {
        Low.MultiplyAdd(a, b.Low);
        High.MultiplyAdd(a, b.High);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Scale(float s)
    {
        Low.Scale(s);
        High.Scale(s);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Visit<TVisitor>(ref TVisitor visitor, int row, int column, int stride)
        where TVisitor : struct, IFloat4Visitor
    {
        Low.Visit(ref visitor, row, column, stride);
        High.Visit(ref visitor, row, column + 4 * HalfGroups * stride, stride);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Map<TMapper>(ref TMapper mapper, VectorPair<THalf> other, int row, int column, int stride)
        where TMapper : struct, IFloat4Mapper
    {
        Low.Map(ref mapper, other.Low, row, column, stride);
        High.Map(ref mapper, other.High, row, column + 4 * HalfGroups * stride, stride);
    }
}

/// <summary>
/// A micro-tile of four register rows. Its three products are the three ways an operand can
/// sit in shared memory, each one vector load per operand row:
/// <see cref="Outer"/> (both operands along the output: C += a·bᵀ, the matmul's step),
/// <see cref="Inner"/> (the left operand along the contraction: C += X·Y over 4 depths).
/// </summary>
internal struct Tile4<TRow>
    where TRow : struct, IVectorRow<TRow>
{
    public TRow R0;
    public TRow R1;
    public TRow R2;
    public TRow R3;

    /// <summary>Row i += a[i] · b: 4·Length multiply-adds for one vector <paramref name="a"/> and one row <paramref name="b"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Outer(Float4 a, TRow b)
    {
        R0.MultiplyAdd(a.X, b);
        R1.MultiplyAdd(a.Y, b);
        R2.MultiplyAdd(a.Z, b);
        R3.MultiplyAdd(a.W, b);
    }

    /// <summary>
    /// Row i += Σₑ xᵢ[e] · yₑ over four depths e: xᵢ is row i of the left operand at those
    /// depths (one vector), yₑ the right operand's row at depth e.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Inner(Float4 x0, Float4 x1, Float4 x2, Float4 x3, TRow y0, TRow y1, TRow y2, TRow y3)
    {
        Accumulate(ref R0, x0, y0, y1, y2, y3);
        Accumulate(ref R1, x1, y0, y1, y2, y3);
        Accumulate(ref R2, x2, y0, y1, y2, y3);
        Accumulate(ref R3, x3, y0, y1, y2, y3);
    }

    /// <summary>Row i *= s[i].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void ScaleRows(Float4 s)
    {
        R0.Scale(s.X);
        R1.Scale(s.Y);
        R2.Scale(s.Z);
        R3.Scale(s.W);
    }

    /// <summary>Row i to tile[offset + i·rowStride + g·stride] (128-bit stores).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Store(ArrayView<Float4> tile, int offset, int rowStride, int stride)
    {
        R0.Store(tile, offset, stride);
        R1.Store(tile, offset + rowStride, stride);
        R2.Store(tile, offset + 2 * rowStride, stride);
        R3.Store(tile, offset + 3 * rowStride, stride);
    }

    /// <summary>Calls <paramref name="visitor"/> with every group of rows row, row + 1, row + 2, row + 3 (see <see cref="IVectorRow{TSelf}.Visit"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Visit<TVisitor>(ref TVisitor visitor, int row, int rowStep, int column, int stride)
        where TVisitor : struct, IFloat4Visitor
    {
        R0.Visit(ref visitor, row, column, stride);
        R1.Visit(ref visitor, row + rowStep, column, stride);
        R2.Visit(ref visitor, row + 2 * rowStep, column, stride);
        R3.Visit(ref visitor, row + 3 * rowStep, column, stride);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Accumulate(ref TRow row, Float4 x, TRow y0, TRow y1, TRow y2, TRow y3)
    {
        row.MultiplyAdd(x.X, y0);
        row.MultiplyAdd(x.Y, y1);
        row.MultiplyAdd(x.Z, y2);
        row.MultiplyAdd(x.W, y3);
    }
}

/// <summary>
/// A 4×4 block of scores S = X·Yᵀ with both operands along the contraction (rows of Q and
/// K, of dO and V): per four depths, four vectors of X and four of Y feed 64 multiply-adds.
/// </summary>
internal struct Scores4x4
{
    public Float4 R0;
    public Float4 R1;
    public Float4 R2;
    public Float4 R3;

    /// <summary>Sᵢⱼ += xᵢ · yⱼ over four depths.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Dots(Float4 x0, Float4 x1, Float4 x2, Float4 x3, Float4 y0, Float4 y1, Float4 y2, Float4 y3)
    {
        Row(ref R0, x0, y0, y1, y2, y3);
        Row(ref R1, x1, y0, y1, y2, y3);
        Row(ref R2, x2, y0, y1, y2, y3);
        Row(ref R3, x3, y0, y1, y2, y3);
    }

    // One multiply-add chain per score (four FMAs once contracted), sixteen chains side by side.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Row(ref Float4 row, Float4 x, Float4 y0, Float4 y1, Float4 y2, Float4 y3)
    {
        row.MultiplyAdd(x.X, new Float4(y0.X, y1.X, y2.X, y3.X));
        row.MultiplyAdd(x.Y, new Float4(y0.Y, y1.Y, y2.Y, y3.Y));
        row.MultiplyAdd(x.Z, new Float4(y0.Z, y1.Z, y2.Z, y3.Z));
        row.MultiplyAdd(x.W, new Float4(y0.W, y1.W, y2.W, y3.W));
    }
}
