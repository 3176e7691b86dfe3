using System.Text;

namespace GpuTransformer.Tests.Training;

/// <summary>A temporary folder deleted after the test.</summary>
public sealed class TempFolder : IDisposable
{
    public TempFolder() => Path = Directory.CreateTempSubdirectory("gt-test-").FullName;

    public string Path { get; }

    /// <summary>Writes <paramref name="text"/> (UTF-8, no BOM) to <paramref name="relative"/> and returns the full path.</summary>
    public string Write(string relative, string text) => WriteBytes(relative, new UTF8Encoding(false).GetBytes(text));

    public string WriteBytes(string relative, byte[] bytes)
    {
        var full = System.IO.Path.Combine(Path, relative);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(full)!);
        File.WriteAllBytes(full, bytes);
        return full;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

internal static class Fixtures
{
    /// <summary>Ten short State of the Union excerpts (committed; no network).</summary>
    public static string SotuMini => Path.Combine(AppContext.BaseDirectory, "Training", "Fixtures", "sotu-mini");

    /// <summary>Width and height from a PNG's IHDR chunk (and checks the signature).</summary>
    public static (int Width, int Height) PngSize(string path)
    {
        var bytes = File.ReadAllBytes(path);
        Assert.True(bytes.Length > 24, $"{path} is too short for a PNG");
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A }, bytes[..8]);
        Assert.Equal("IHDR", Encoding.ASCII.GetString(bytes, 12, 4));
        return (System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(16)), System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(20)));
    }
}
