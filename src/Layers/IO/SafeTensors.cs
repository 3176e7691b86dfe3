using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace GpuTransformer.Layers.IO;

/// <summary>Element types of a safetensors file that GpuTransformer reads and writes.</summary>
public enum SafeTensorType
{
    /// <summary>32-bit float.</summary>
    F32,

    /// <summary>64-bit float.</summary>
    F64,

    /// <summary>64-bit signed integer.</summary>
    I64,

    /// <summary>32-bit signed integer.</summary>
    I32,

    /// <summary>Unsigned byte.</summary>
    U8,

    /// <summary>One byte, 0 or 1.</summary>
    Bool,
}

/// <summary>One tensor of a safetensors file: name, element type, shape and raw little-endian bytes.</summary>
public sealed class SafeTensor
{
    /// <summary>A tensor over <paramref name="data"/> (not copied).</summary>
    /// <param name="name">Its name in the file (a state_dict name).</param>
    /// <param name="type">Element type.</param>
    /// <param name="shape">Dimensions, outermost first.</param>
    /// <param name="data">Raw little-endian bytes, row-major.</param>
    /// <exception cref="ArgumentException">The bytes do not match the shape and type.</exception>
    public SafeTensor(string name, SafeTensorType type, int[] shape, byte[] data)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(data);
        var count = ElementCount(shape);
        if (data.LongLength != count * SafeTensors.ElementSize(type))
        {
            throw new ArgumentException(
                $"Tensor '{name}' of type {type} and shape [{string.Join(", ", shape)}] needs {count * SafeTensors.ElementSize(type)} bytes, got {data.LongLength}.");
        }
        Name = name;
        Type = type;
        Shape = shape;
        Data = data;
    }

    /// <summary>Its name in the file.</summary>
    public string Name { get; }

    /// <summary>Element type.</summary>
    public SafeTensorType Type { get; }

    /// <summary>Dimensions, outermost first.</summary>
    public int[] Shape { get; }

    /// <summary>Raw little-endian bytes.</summary>
    public byte[] Data { get; }

    /// <summary>Number of elements (product of the shape; 1 for a scalar).</summary>
    public long Count => ElementCount(Shape);

    /// <summary>A float tensor.</summary>
    public static SafeTensor FromFloats(string name, int[] shape, ReadOnlySpan<float> values) =>
        new(name, SafeTensorType.F32, shape, MemoryMarshal.AsBytes(values).ToArray());

    /// <summary>An int64 tensor (what PyTorch uses for token ids).</summary>
    public static SafeTensor FromLongs(string name, int[] shape, ReadOnlySpan<long> values) =>
        new(name, SafeTensorType.I64, shape, MemoryMarshal.AsBytes(values).ToArray());

    /// <summary>An int32 tensor.</summary>
    public static SafeTensor FromInts(string name, int[] shape, ReadOnlySpan<int> values) =>
        new(name, SafeTensorType.I32, shape, MemoryMarshal.AsBytes(values).ToArray());

    /// <summary>Values as float (F32 as is; F64 and integer types converted).</summary>
    public float[] ToFloats() => Type switch
    {
        SafeTensorType.F32 => MemoryMarshal.Cast<byte, float>(Data).ToArray(),
        SafeTensorType.F64 => Array.ConvertAll(MemoryMarshal.Cast<byte, double>(Data).ToArray(), v => (float)v),
        SafeTensorType.I64 => Array.ConvertAll(MemoryMarshal.Cast<byte, long>(Data).ToArray(), v => (float)v),
        SafeTensorType.I32 => Array.ConvertAll(MemoryMarshal.Cast<byte, int>(Data).ToArray(), v => (float)v),
        SafeTensorType.U8 or SafeTensorType.Bool => Array.ConvertAll(Data, v => (float)v),
        _ => throw new InvalidDataException($"Tensor '{Name}' has unsupported type {Type}."),
    };

    /// <summary>Values as int (integer types; F32/F64 only when every value is integral).</summary>
    public int[] ToInts()
    {
        long[] longs = Type switch
        {
            SafeTensorType.I64 => MemoryMarshal.Cast<byte, long>(Data).ToArray(),
            SafeTensorType.I32 => Array.ConvertAll(MemoryMarshal.Cast<byte, int>(Data).ToArray(), v => (long)v),
            SafeTensorType.U8 or SafeTensorType.Bool => Array.ConvertAll(Data, v => (long)v),
            SafeTensorType.F32 or SafeTensorType.F64 => Array.ConvertAll(ToDoubles(), v =>
                v == Math.Floor(v) ? (long)v : throw new InvalidDataException($"Tensor '{Name}' holds non-integral value {v} where integers are expected.")),
            _ => throw new InvalidDataException($"Tensor '{Name}' has unsupported type {Type}."),
        };
        return Array.ConvertAll(longs, v => v is >= int.MinValue and <= int.MaxValue
            ? (int)v
            : throw new InvalidDataException($"Tensor '{Name}' holds {v}, outside the 32-bit range."));
    }

    /// <summary>Values as double.</summary>
    public double[] ToDoubles() => Type == SafeTensorType.F64
        ? MemoryMarshal.Cast<byte, double>(Data).ToArray()
        : Array.ConvertAll(ToFloats(), v => (double)v);

    /// <inheritdoc/>
    public override string ToString() => $"{Name}: {Type}[{string.Join(", ", Shape)}]";

    internal static long ElementCount(int[] shape)
    {
        long count = 1;
        foreach (var size in shape)
        {
            if (size < 0)
                throw new InvalidDataException($"Negative dimension in shape [{string.Join(", ", shape)}].");
            count = checked(count * size);
        }
        return count;
    }
}

/// <summary>
/// Reads and writes the safetensors format: 8 bytes little-endian header length, a JSON
/// header (<c>dtype</c>, <c>shape</c>, <c>data_offsets</c> per tensor, optional
/// <c>__metadata__</c> of strings), then the raw little-endian data. Writing is atomic:
/// a temporary file is written and flushed, then renamed over the target, so a crash
/// mid-save leaves the previous file intact.
/// </summary>
public static class SafeTensors
{
    private const string MetadataKey = "__metadata__";
    private const long MaxHeaderBytes = 100L * 1024 * 1024;

    /// <summary>Bytes per element of <paramref name="type"/>.</summary>
    public static int ElementSize(SafeTensorType type) => type switch
    {
        SafeTensorType.F32 or SafeTensorType.I32 => 4,
        SafeTensorType.F64 or SafeTensorType.I64 => 8,
        SafeTensorType.U8 or SafeTensorType.Bool => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };

    /// <summary>Reads a whole file.</summary>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="InvalidDataException">Malformed header, unknown dtype, bad offsets or a truncated body; the message names the file and tensor.</exception>
    public static SafeTensorFile Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path))
            throw new FileNotFoundException($"Safetensors file '{path}' does not exist.", path);
        using var stream = File.OpenRead(path);
        return Read(stream, path);
    }

    /// <summary>Reads from a stream; <paramref name="source"/> names it in errors.</summary>
    public static SafeTensorFile Read(Stream stream, string source)
    {
        ArgumentNullException.ThrowIfNull(stream);
        Span<byte> lengthBytes = stackalloc byte[8];
        if (ReadFully(stream, lengthBytes) != 8)
            throw new InvalidDataException($"'{source}' is not a safetensors file: shorter than its 8-byte header length.");
        var headerLength = BinaryPrimitives.ReadInt64LittleEndian(lengthBytes);
        if (headerLength <= 1 || headerLength > MaxHeaderBytes)
            throw new InvalidDataException($"'{source}' is not a safetensors file: header length {headerLength} is out of range.");
        var headerBytes = new byte[headerLength];
        if (ReadFully(stream, headerBytes) != headerLength)
            throw new InvalidDataException($"'{source}' is truncated: the header needs {headerLength} bytes.");

        List<KeyValuePair<string, JsonNode?>> header;
        try
        {
            var root = JsonNode.Parse(Encoding.UTF8.GetString(headerBytes).TrimEnd(' ', '\0')) as JsonObject
                ?? throw new InvalidDataException($"'{source}' has a header that is not a JSON object.");
            // JsonObject reports a repeated key only when enumerated.
            header = [.. root];
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{source}' has a malformed JSON header: {e.Message}", e);
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"'{source}' has a malformed JSON header: key '{RepeatedKey(headerBytes)}' appears twice.", e);
        }

        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        var entries = new List<(string Name, SafeTensorType Type, int[] Shape, long Begin, long End)>();
        foreach (var (name, node) in header)
        {
            if (name == MetadataKey)
            {
                if (node is JsonObject meta)
                {
                    foreach (var (key, value) in meta)
                        metadata[key] = value?.GetValueKind() == JsonValueKind.String ? value.GetValue<string>() : value?.ToJsonString() ?? "";
                }
                continue;
            }
            entries.Add(ParseEntry(source, name, node));
        }

        var bodyLength = stream.CanSeek ? Math.Max(0, stream.Length - 8 - headerLength) : 0;
        if (bodyLength > Array.MaxLength)
            throw new InvalidDataException($"'{source}' has {bodyLength} bytes of tensor data; files over {Array.MaxLength} bytes are not supported.");
        var body = new byte[bodyLength];
        if (stream.CanSeek)
        {
            var got = ReadFully(stream, body);
            if (got != body.Length)
                throw new InvalidDataException($"'{source}' is truncated: read {got} of {body.Length} body bytes.");
        }
        else
        {
            using var rest = new MemoryStream();
            stream.CopyTo(rest);
            body = rest.ToArray();
        }

        var tensors = new Dictionary<string, SafeTensor>(StringComparer.Ordinal);
        long previousEnd = 0;
        var previousName = "";
        foreach (var (name, type, shape, begin, end) in entries.OrderBy(e => e.Begin).ThenBy(e => e.End))
        {
            var expected = SafeTensor.ElementCount(shape) * ElementSize(type);
            if (end - begin != expected)
            {
                throw new InvalidDataException(
                    $"'{source}': tensor '{name}' of {type}[{string.Join(", ", shape)}] needs {expected} bytes but its data_offsets span {end - begin}.");
            }
            if (end > body.Length)
            {
                throw new InvalidDataException(
                    $"'{source}' is truncated: tensor '{name}' needs body bytes {begin}..{end} but the body has {body.Length}.");
            }
            // The format requires the tensors to tile the body (the reference implementation
            // checks it too): an overlap or a hole means a corrupt or hand-edited file.
            if (begin != previousEnd)
            {
                throw new InvalidDataException(begin < previousEnd
                    ? $"'{source}': tensor '{name}' (bytes {begin}..{end}) overlaps tensor '{previousName}' (ending at {previousEnd})."
                    : $"'{source}': tensor '{name}' starts at byte {begin}, leaving a gap after {(previousName.Length > 0 ? $"tensor '{previousName}'" : "the header")} (ending at {previousEnd}).");
            }
            tensors.Add(name, new SafeTensor(name, type, shape, body.AsSpan((int)begin, (int)(end - begin)).ToArray()));
            previousEnd = end;
            previousName = name;
        }
        if (previousEnd != body.Length)
            throw new InvalidDataException($"'{source}' has {body.Length - previousEnd} bytes after the last tensor's data.");
        return new SafeTensorFile(source, tensors, metadata);
    }

    /// <summary>
    /// Test-only: when this environment variable names a file and a write replaces an existing
    /// file, the writer stops halfway through the temporary file (that half flushed to disk),
    /// creates the named file holding the temporary file's path, and waits up to two minutes
    /// before it goes on — the moment a kill during a checkpoint save hits, made observable.
    /// </summary>
    internal const string TestPauseVariable = "GPUTRANSFORMER_TEST_PAUSE_REPLACING_WRITE";

    /// <summary>
    /// Writes <paramref name="tensors"/> (in the given order) and <paramref name="metadata"/>
    /// atomically: into a temporary file <c>.{name}.{pid}.{guid}.tmp</c> beside
    /// <paramref name="path"/>, flushed to disk, renamed over <paramref name="path"/>, and the
    /// directory synced so that the rename survives a crash. A process killed midway leaves the
    /// previous file and a temporary file that readers never open; the next write to the same
    /// path deletes the temporary files of processes that are gone.
    /// </summary>
    public static void Write(string path, IEnumerable<SafeTensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tensors);
        var list = tensors.ToList();
        var duplicate = list.GroupBy(t => t.Name).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null)
            throw new ArgumentException($"Tensor name '{duplicate.Key}' appears twice.", nameof(tensors));
        if (list.Any(t => t.Name == MetadataKey))
            throw new ArgumentException($"'{MetadataKey}' is reserved for the file's metadata and cannot name a tensor.", nameof(tensors));

        var header = new JsonObject();
        if (metadata is { Count: > 0 })
        {
            var meta = new JsonObject();
            foreach (var (key, value) in metadata)
                meta[key] = value;
            header[MetadataKey] = meta;
        }
        long offset = 0;
        foreach (var tensor in list)
        {
            header[tensor.Name] = new JsonObject
            {
                ["dtype"] = TypeName(tensor.Type),
                ["shape"] = new JsonArray(tensor.Shape.Select(s => (JsonNode)s).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + tensor.Data.LongLength),
            };
            offset += tensor.Data.LongLength;
        }
        var headerText = header.ToJsonString();
        var padding = (8 - (Encoding.UTF8.GetByteCount(headerText) % 8)) % 8; // keep the body 8-byte aligned
        var headerBytes = Encoding.UTF8.GetBytes(headerText + new string(' ', padding));

        var directory = Path.GetDirectoryName(Path.GetFullPath(path))!;
        Directory.CreateDirectory(directory);
        DeleteStaleTemporaries(directory, Path.GetFileName(path));
        var temporary = Path.Combine(directory, $".{Path.GetFileName(path)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        var pauseSignal = File.Exists(path) ? Environment.GetEnvironmentVariable(TestPauseVariable) : null;
        try
        {
            using (var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                Span<byte> lengthBytes = stackalloc byte[8];
                BinaryPrimitives.WriteInt64LittleEndian(lengthBytes, headerBytes.Length);
                stream.Write(lengthBytes);
                stream.Write(headerBytes);
                for (var i = 0; i < list.Count; i++)
                {
                    if (i == list.Count / 2 && !string.IsNullOrEmpty(pauseSignal))
                        PauseForTest(stream, temporary, pauseSignal);
                    stream.Write(list[i].Data);
                }
                stream.Flush(flushToDisk: true);
            }
            File.Move(temporary, path, overwrite: true);
        }
        catch
        {
            try
            {
                File.Delete(temporary);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // best effort: the previous file is untouched either way
            }
            throw;
        }
        SyncDirectory(directory, path);
    }

    /// <summary>
    /// Deletes the temporary files of earlier writes to <paramref name="fileName"/> whose process
    /// is gone (killed mid-write); those of running processes are left to them.
    /// </summary>
    private static void DeleteStaleTemporaries(string directory, string fileName)
    {
        var prefix = $".{fileName}.";
        foreach (var file in Directory.EnumerateFiles(directory, ".*.tmp"))
        {
            var name = Path.GetFileName(file);
            if (!name.StartsWith(prefix, StringComparison.Ordinal))
                continue;
            var parts = name[prefix.Length..].Split('.'); // {pid}.{guid}.tmp
            if (parts.Length != 3 || !int.TryParse(parts[0], System.Globalization.CultureInfo.InvariantCulture, out var processId) || IsRunning(processId))
                continue;
            try
            {
                File.Delete(file);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // left for the next write; readers ignore it
            }
        }
    }

    private static bool IsRunning(int processId)
    {
        if (processId == Environment.ProcessId)
            return true;
        try
        {
            using var process = System.Diagnostics.Process.GetProcessById(processId);
            return !process.HasExited;
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException)
        {
            return false;
        }
    }

    /// <summary>
    /// Makes the rename durable: on Linux and macOS a new directory entry reaches the disk only
    /// when the directory itself is fsynced, so a crash after the rename could otherwise bring
    /// the old entry back. (Windows has no directory handle to flush; NTFS journals the rename.)
    /// </summary>
    private static void SyncDirectory(string directory, string path)
    {
        if (OperatingSystem.IsWindows())
            return;
        var descriptor = Posix.Open(directory, 0 /* O_RDONLY */);
        if (descriptor < 0)
            throw new IOException($"'{path}' was written, but its directory could not be opened to sync the rename (errno {Marshal.GetLastPInvokeError()}).");
        try
        {
            if (Posix.Fsync(descriptor) != 0)
                throw new IOException($"'{path}' was written, but syncing its directory failed (errno {Marshal.GetLastPInvokeError()}).");
        }
        finally
        {
            _ = Posix.Close(descriptor);
        }
    }

    /// <summary>See <see cref="TestPauseVariable"/>: flush what was written, say where, and wait to be killed.</summary>
    private static void PauseForTest(FileStream stream, string temporary, string signal)
    {
        stream.Flush(flushToDisk: true);
        File.WriteAllText(signal, temporary);
        Thread.Sleep(TimeSpan.FromMinutes(2));
    }

    private static class Posix
    {
        [DllImport("libc", EntryPoint = "open", SetLastError = true)]
        public static extern int Open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);

        [DllImport("libc", EntryPoint = "fsync", SetLastError = true)]
        public static extern int Fsync(int descriptor);

        [DllImport("libc", EntryPoint = "close", SetLastError = true)]
        public static extern int Close(int descriptor);
    }

    private static (string Name, SafeTensorType Type, int[] Shape, long Begin, long End) ParseEntry(string source, string name, JsonNode? node)
    {
        if (node is not JsonObject entry)
            throw new InvalidDataException($"'{source}': header entry '{name}' is not an object.");
        try
        {
            var dtype = entry["dtype"]?.GetValue<string>() ?? throw new InvalidDataException($"'{source}': tensor '{name}' has no dtype.");
            var type = ParseType(dtype) ?? throw new InvalidDataException($"'{source}': tensor '{name}' has unsupported dtype '{dtype}'.");
            var shape = (entry["shape"] as JsonArray ?? throw new InvalidDataException($"'{source}': tensor '{name}' has no shape."))
                .Select(s => s!.GetValue<int>()).ToArray();
            var offsets = entry["data_offsets"] as JsonArray;
            if (offsets is not { Count: 2 })
                throw new InvalidDataException($"'{source}': tensor '{name}' needs data_offsets [begin, end].");
            var begin = offsets[0]!.GetValue<long>();
            var end = offsets[1]!.GetValue<long>();
            if (begin < 0 || end < begin)
                throw new InvalidDataException($"'{source}': tensor '{name}' has invalid data_offsets [{begin}, {end}].");
            if (shape.Any(s => s < 0))
                throw new InvalidDataException($"'{source}': tensor '{name}' has a negative dimension.");
            try
            {
                _ = checked(SafeTensor.ElementCount(shape) * ElementSize(type));
            }
            catch (OverflowException)
            {
                throw new InvalidDataException($"'{source}': tensor '{name}' has shape [{string.Join(", ", shape)}] whose byte size overflows.");
            }
            return (name, type, shape, begin, end);
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or NullReferenceException)
        {
            throw new InvalidDataException($"'{source}': tensor '{name}' has a malformed header entry: {e.Message}", e);
        }
    }

    /// <summary>The type a header's <c>dtype</c> names; null when unsupported.</summary>
    internal static SafeTensorType? ParseType(string dtype) => dtype switch
    {
        "F32" => SafeTensorType.F32,
        "F64" => SafeTensorType.F64,
        "I64" => SafeTensorType.I64,
        "I32" => SafeTensorType.I32,
        "U8" => SafeTensorType.U8,
        "BOOL" => SafeTensorType.Bool,
        _ => null,
    };

    private static string TypeName(SafeTensorType type) => type switch
    {
        SafeTensorType.F32 => "F32",
        SafeTensorType.F64 => "F64",
        SafeTensorType.I64 => "I64",
        SafeTensorType.I32 => "I32",
        SafeTensorType.U8 => "U8",
        SafeTensorType.Bool => "BOOL",
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };

    /// <summary>The first key that appears twice in the header's top-level object (the header is known to parse; padding trimmed as for the parse).</summary>
    private static string RepeatedKey(byte[] headerBytes)
    {
        using var document = JsonDocument.Parse(headerBytes.AsMemory().TrimEnd(" \0"u8));
        return document.RootElement.EnumerateObject().GroupBy(p => p.Name).FirstOrDefault(g => g.Count() > 1)?.Key ?? "?";
    }

    private static int ReadFully(Stream stream, Span<byte> buffer)
    {
        var total = 0;
        while (total < buffer.Length)
        {
            var read = stream.Read(buffer[total..]);
            if (read == 0)
                break;
            total += read;
        }
        return total;
    }
}

/// <summary>The tensors and metadata of one safetensors file.</summary>
public sealed class SafeTensorFile(string source, IReadOnlyDictionary<string, SafeTensor> tensors, IReadOnlyDictionary<string, string> metadata)
{
    /// <summary>Where the file came from (for error messages).</summary>
    public string Source { get; } = source;

    /// <summary>The tensors by name.</summary>
    public IReadOnlyDictionary<string, SafeTensor> Tensors { get; } = tensors;

    /// <summary>The header's <c>__metadata__</c> (string to string).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; } = metadata;

    /// <summary>The tensor <paramref name="name"/>.</summary>
    /// <exception cref="InvalidDataException">It is missing, or its shape differs from <paramref name="expectedShape"/>.</exception>
    public SafeTensor Get(string name, int[]? expectedShape = null)
    {
        if (!Tensors.TryGetValue(name, out var tensor))
            throw new InvalidDataException($"'{Source}' has no tensor '{name}'.");
        if (expectedShape is not null && !expectedShape.SequenceEqual(tensor.Shape))
        {
            throw new InvalidDataException(
                $"'{Source}': tensor '{name}' has shape [{string.Join(", ", tensor.Shape)}], expected [{string.Join(", ", expectedShape)}].");
        }
        return tensor;
    }

    /// <summary>Float values of <paramref name="name"/>.</summary>
    public float[] Floats(string name, int[]? expectedShape = null) => Get(name, expectedShape).ToFloats();

    /// <summary>Integer values of <paramref name="name"/>.</summary>
    public int[] Ints(string name, int[]? expectedShape = null) => Get(name, expectedShape).ToInts();

    /// <summary>A scalar (a tensor of one element).</summary>
    public double Scalar(string name)
    {
        var tensor = Get(name);
        if (tensor.Count != 1)
            throw new InvalidDataException($"'{Source}': tensor '{name}' is not a scalar (shape [{string.Join(", ", tensor.Shape)}]).");
        return tensor.ToDoubles()[0];
    }
}
