using System.CommandLine;
using System.Globalization;
using System.Numerics;

namespace GpuTransformer.Cli.Commands;

/// <summary>Range checks for numeric options: a value outside is a usage error naming the option and the range.</summary>
internal static class OptionRanges
{
    /// <summary>Requires <paramref name="min"/> ≤ value ≤ <paramref name="max"/> (inclusive).</summary>
    public static Option<T> InRange<T>(this Option<T> option, T min, T max)
        where T : INumber<T>
    {
        option.Validators.Add(result =>
        {
            var value = result.GetValueOrDefault<T>();
            if (value is null || T.IsNaN(value) || value < min || value > max)
                result.AddError(string.Create(CultureInfo.InvariantCulture, $"{option.Name} must be between {min} and {max}, got {value}."));
        });
        return option;
    }

    /// <summary>Requires value &gt; <paramref name="min"/> (exclusive) and ≤ <paramref name="max"/>.</summary>
    public static Option<T> AboveUpTo<T>(this Option<T> option, T min, T max)
        where T : INumber<T>
    {
        option.Validators.Add(result =>
        {
            var value = result.GetValueOrDefault<T>();
            if (value is null || T.IsNaN(value) || value <= min || value > max)
                result.AddError(string.Create(CultureInfo.InvariantCulture, $"{option.Name} must be in ({min}, {max}], got {value}."));
        });
        return option;
    }

    /// <summary>Requires <paramref name="min"/> ≤ value ≤ <paramref name="max"/> (inclusive) when the option is given.</summary>
    public static Option<T?> InRange<T>(this Option<T?> option, T min, T max)
        where T : struct, INumber<T>
    {
        option.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<T?>() is { } value && (T.IsNaN(value) || value < min || value > max))
                result.AddError(string.Create(CultureInfo.InvariantCulture, $"{option.Name} must be between {min} and {max}, got {value}."));
        });
        return option;
    }

    /// <summary>Requires value &gt; <paramref name="min"/> (exclusive) and ≤ <paramref name="max"/> when the option is given.</summary>
    public static Option<T?> AboveUpTo<T>(this Option<T?> option, T min, T max)
        where T : struct, INumber<T>
    {
        option.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<T?>() is { } value && (T.IsNaN(value) || value <= min || value > max))
                result.AddError(string.Create(CultureInfo.InvariantCulture, $"{option.Name} must be in ({min}, {max}], got {value}."));
        });
        return option;
    }

    /// <summary>Requires <paramref name="min"/> ≤ value &lt; <paramref name="max"/> (a probability that may not be 1) when the option is given.</summary>
    public static Option<T?> FromBelow<T>(this Option<T?> option, T min, T max)
        where T : struct, INumber<T>
    {
        option.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<T?>() is { } value && (T.IsNaN(value) || value < min || value >= max))
                result.AddError(string.Create(CultureInfo.InvariantCulture, $"{option.Name} must be in [{min}, {max}), got {value}."));
        });
        return option;
    }
}
