using System.Buffers;
using System.Text;

namespace GpuTransformer.Training.Data;

/// <summary>
/// Reads files that must be text, and says clearly when they are not: empty, binary
/// (NUL bytes, many control characters) or not UTF-8.
/// </summary>
internal static class TextFiles
{
    /// <summary>More invalid UTF-8 bytes or control characters than this fraction: not text.</summary>
    public const double MaxBadFraction = 0.01;

    /// <summary>Reads <paramref name="path"/> as UTF-8 text (BOM dropped, CRLF → LF).</summary>
    /// <exception cref="CorpusException">Missing, unreadable, empty or binary.</exception>
    public static string Read(string path)
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new CorpusException(path, "does not exist", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CorpusException(path, $"cannot be read ({e.Message})", e);
        }
        return Decode(path, bytes);
    }

    /// <summary>Decodes <paramref name="bytes"/> read from <paramref name="path"/> (named in errors).</summary>
    public static string Decode(string path, ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length == 0)
            throw new CorpusException(path, "is empty (0 bytes); a corpus needs text");
        var nul = bytes.IndexOf((byte)0);
        if (nul >= 0)
            throw new CorpusException(path, $"contains a NUL byte at offset {nul:N0}: this is a binary file, not text");
        var bom = Encoding.UTF8.Preamble;
        if (bytes.StartsWith(bom))
            bytes = bytes[bom.Length..];

        var invalid = CountInvalidUtf8(bytes);
        if (invalid > MaxBadFraction * bytes.Length)
        {
            throw new CorpusException(path,
                $"is not UTF-8 text: {invalid:N0} of {bytes.Length:N0} bytes ({100.0 * invalid / bytes.Length:F1}%) are invalid UTF-8 (binary, or another encoding: convert it with iconv -t UTF-8)");
        }

        var text = Encoding.UTF8.GetString(bytes);
        var control = 0;
        foreach (var c in text)
        {
            if (char.IsControl(c) && c is not ('\n' or '\r' or '\t' or '\f' or '\v'))
                control++;
        }
        if (control > MaxBadFraction * text.Length)
            throw new CorpusException(path, $"looks binary: {control:N0} of {text.Length:N0} characters are control characters");

        text = text.Replace("\r\n", "\n", StringComparison.Ordinal);
        if (string.IsNullOrWhiteSpace(text))
            throw new CorpusException(path, "contains only whitespace; a corpus needs text");
        return text;
    }

    private static int CountInvalidUtf8(ReadOnlySpan<byte> bytes)
    {
        if (System.Text.Unicode.Utf8.IsValid(bytes))
            return 0;
        var invalid = 0;
        while (!bytes.IsEmpty)
        {
            var status = Rune.DecodeFromUtf8(bytes, out _, out var consumed);
            if (status != OperationStatus.Done)
                invalid += consumed;
            bytes = bytes[Math.Max(consumed, 1)..];
        }
        return invalid;
    }
}
