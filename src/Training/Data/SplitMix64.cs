namespace GpuTransformer.Training.Data;

/// <summary>
/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, fast generator whose whole state is one
/// <see cref="ulong"/>, so it is reproducible across .NET versions and machines (unlike
/// <see cref="Random"/>, whose algorithm is not specified) and trivially saved and restored.
/// </summary>
internal struct SplitMix64
{
    private const ulong Golden = 0x9E3779B97F4A7C15UL;

    /// <summary>A generator starting at <paramref name="state"/>.</summary>
    public SplitMix64(ulong state)
    {
        State = state;
    }

    /// <summary>The whole state; a generator made from it continues the same sequence.</summary>
    public ulong State { get; private set; }

    /// <summary>The next 64 random bits.</summary>
    public ulong NextUInt64()
    {
        State += Golden;
        return Mix(State);
    }

    /// <summary>A uniform integer in [0, <paramref name="bound"/>), without modulo bias (Lemire's method).</summary>
    public long NextBelow(long bound)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bound);
        var range = (ulong)bound;
        var product = (UInt128)NextUInt64() * range;
        var low = (ulong)product;
        if (low < range)
        {
            var threshold = (0 - range) % range;
            while (low < threshold)
            {
                product = (UInt128)NextUInt64() * range;
                low = (ulong)product;
            }
        }
        return (long)(product >> 64);
    }

    /// <summary>A generator for item <paramref name="index"/> of the stream <paramref name="seed"/>: independent of every other index, so a step counter is all the state a batcher needs.</summary>
    public static SplitMix64 ForIndex(ulong seed, long index) =>
        new(Mix(seed ^ Mix((ulong)index * Golden + 0x2545F4914F6CDD1DUL)));

    /// <summary>The SplitMix64 finaliser (a bijection on 64 bits with good avalanche).</summary>
    public static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
