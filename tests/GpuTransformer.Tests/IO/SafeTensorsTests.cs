using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json.Nodes;

namespace GpuTransformer.Tests.IO;

/// <summary>
/// The safetensors reader and writer: round trips of every dtype and of metadata, the
/// on-disk layout, atomic writes, and a clear <see cref="InvalidDataException"/> naming
/// the file and tensor for every kind of damaged file.
/// </summary>
public sealed class SafeTensorsTests : IDisposable
{
    private readonly string directory = Directory.CreateTempSubdirectory("safetensors-tests-").FullName;

    public void Dispose() => Directory.Delete(directory, recursive: true);

    private string PathOf(string name) => Path.Combine(directory, name);

    [Fact]
    public void Every_dtype_round_trips_bit_exactly_with_shape_and_order()
    {
        var tensors = EveryDtype();
        var path = PathOf("all.safetensors");
        SafeTensors.Write(path, tensors);
        var file = SafeTensors.Read(path);

        Assert.Equal(tensors.Select(t => t.Name).Order(), file.Tensors.Keys.Order());
        foreach (var written in tensors)
        {
            var read = file.Get(written.Name, written.Shape);
            Assert.Equal(written.Type, read.Type);
            Assert.Equal(written.Shape, read.Shape);
            Assert.Equal(written.Data, read.Data);
        }
        // Typed accessors see the values, not just the bytes (NaN and −0 included).
        Assert.Equal(BitConverter.SingleToInt32Bits(-0f), BitConverter.SingleToInt32Bits(file.Floats("f32")[1]));
        Assert.True(float.IsNaN(file.Floats("f32")[2]));
        Assert.Equal(float.PositiveInfinity, file.Floats("f32")[3]);
        Assert.Equal(Math.PI, file.Get("f64").ToDoubles()[0]);
        Assert.Equal(long.MinValue, MemoryMarshal.Cast<byte, long>(file.Get("i64").Data)[0]);
        Assert.Equal([int.MinValue, -1, 0, int.MaxValue], file.Ints("i32"));
        Assert.Equal([0, 1, 255], file.Ints("u8"));
        Assert.Equal([1, 0, 1], file.Ints("bool"));
        Assert.Equal(2.5, file.Scalar("scalar"));
        Assert.Equal(0, file.Get("empty").Count);
        Assert.Empty(file.Metadata);

        // Layout: u64 LE header length, a JSON object padded to 8 bytes, then the tensors in the given order.
        var bytes = File.ReadAllBytes(path);
        var headerLength = BinaryPrimitives.ReadInt64LittleEndian(bytes);
        Assert.Equal(0, headerLength % 8);
        var header = JsonNode.Parse(Encoding.UTF8.GetString(bytes, 8, (int)headerLength))!.AsObject();
        Assert.False(header.ContainsKey("__metadata__"));
        Assert.Equal("BOOL", header["bool"]!["dtype"]!.GetValue<string>());
        long offset = 0;
        foreach (var tensor in tensors)
        {
            var offsets = header[tensor.Name]!["data_offsets"]!.AsArray();
            Assert.Equal(offset, offsets[0]!.GetValue<long>());
            Assert.Equal(offset + tensor.Data.Length, offsets[1]!.GetValue<long>());
            Assert.Equal(tensor.Data, bytes.AsSpan((int)(8 + headerLength + offset), tensor.Data.Length).ToArray());
            offset += tensor.Data.Length;
        }
        Assert.Equal(8 + headerLength + offset, bytes.Length);
    }

    [Fact]
    public void Metadata_round_trips_and_reads_from_a_non_seekable_stream()
    {
        var metadata = new Dictionary<string, string>
        {
            ["format"] = "pt",
            ["empty"] = "",
            ["quotes and unicode"] = "\"d_model\" = 512, \\ √d, 日本語",
        };
        var path = PathOf("meta.safetensors");
        SafeTensors.Write(path, [SafeTensor.FromFloats("w", [2], [1f, 2f])], metadata);

        var file = SafeTensors.Read(path);
        Assert.Equal(metadata.OrderBy(p => p.Key), file.Metadata.OrderBy(p => p.Key));

        using var stream = new NonSeekableStream(File.ReadAllBytes(path));
        var streamed = SafeTensors.Read(stream, "pipe");
        Assert.Equal(metadata.OrderBy(p => p.Key), streamed.Metadata.OrderBy(p => p.Key));
        Assert.Equal([1f, 2f], streamed.Floats("w", [2]));
        Assert.Equal("pipe", streamed.Source);
    }

    [Fact]
    public void Reads_a_file_written_by_another_writer_unpadded_and_out_of_order()
    {
        // Header entries in a different order from the data, no padding, metadata last:
        // the format allows all of it.
        var body = new byte[12 + 8];
        BitConverter.TryWriteBytes(body.AsSpan(0), 1.5f);
        BitConverter.TryWriteBytes(body.AsSpan(4), -2f);
        BitConverter.TryWriteBytes(body.AsSpan(8), 3f);
        BitConverter.TryWriteBytes(body.AsSpan(12), 42L);
        var path = Raw("other.safetensors",
            """{"b":{"dtype":"I64","shape":[1],"data_offsets":[12,20]},"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"__metadata__":{"k":"v"}}""",
            body);
        var file = SafeTensors.Read(path);
        Assert.Equal([1.5f, -2f, 3f], file.Floats("a", [3]));
        Assert.Equal([42], file.Ints("b", [1]));
        Assert.Equal("v", file.Metadata["k"]);
    }

    [Fact]
    public void Overwrite_replaces_the_file_and_leaves_no_temporary()
    {
        var path = PathOf("model.safetensors");
        SafeTensors.Write(path, [SafeTensor.FromFloats("w", [3], [1f, 2f, 3f])]);
        SafeTensors.Write(path, [SafeTensor.FromInts("n", [1], [7])], new Dictionary<string, string> { ["step"] = "2" });
        var file = SafeTensors.Read(path);
        Assert.Equal(["n"], file.Tensors.Keys);
        Assert.Equal("2", file.Metadata["step"]);
        Assert.Equal([Path.GetFileName(path)], Directory.GetFiles(directory).Select(Path.GetFileName));
    }

    [Fact]
    public void Temporary_files_of_dead_writers_are_deleted_by_the_next_write_and_live_ones_kept()
    {
        var path = PathOf("model.safetensors");
        SafeTensors.Write(path, [SafeTensor.FromFloats("w", [3], [1f, 2f, 3f])]);
        // A process that has exited, and this one (alive): what a SIGKILL mid-write and a concurrent writer leave.
        using var exited = System.Diagnostics.Process.Start(OperatingSystem.IsWindows() ? new("cmd", ["/c", "exit"]) : new System.Diagnostics.ProcessStartInfo("/bin/sh", ["-c", "exit"]))!;
        exited.WaitForExit();
        var dead = PathOf($".model.safetensors.{exited.Id}.0123456789abcdef0123456789abcdef.tmp");
        var live = PathOf($".model.safetensors.{Environment.ProcessId}.fedcba9876543210fedcba9876543210.tmp");
        var other = PathOf($".other.safetensors.{exited.Id}.0123456789abcdef0123456789abcdef.tmp");
        foreach (var partial in new[] { dead, live, other })
            File.WriteAllBytes(partial, [1, 2, 3]);
        Assert.Equal([1f, 2f, 3f], SafeTensors.Read(path).Floats("w")); // readers never look at them

        SafeTensors.Write(path, [SafeTensor.FromFloats("w", [3], [4f, 5f, 6f])]);
        Assert.False(File.Exists(dead));
        Assert.True(File.Exists(live));
        Assert.True(File.Exists(other)); // another file's temporaries are that file's writer's business
        Assert.Equal([4f, 5f, 6f], SafeTensors.Read(path).Floats("w"));
    }

    [Fact]
    public void A_write_that_fails_while_enumerating_tensors_leaves_the_previous_file_byte_identical()
    {
        var path = PathOf("model.safetensors");
        SafeTensors.Write(path, EveryDtype(), new Dictionary<string, string> { ["step"] = "1" });
        var before = File.ReadAllBytes(path);

        static IEnumerable<SafeTensor> FailsHalfway()
        {
            yield return SafeTensor.FromFloats("w", [1000], new float[1000]);
            throw new IOException("simulated failure mid-save");
        }
        var error = Assert.Throws<IOException>(() => SafeTensors.Write(path, FailsHalfway()));
        Assert.Equal("simulated failure mid-save", error.Message);

        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Equal([Path.GetFileName(path)], Directory.GetFiles(directory).Select(Path.GetFileName));
    }

    [Fact]
    public void A_write_that_fails_after_the_temporary_file_was_written_removes_it()
    {
        // The target is a directory: the data is written and flushed, then the rename fails.
        var target = PathOf("taken");
        Directory.CreateDirectory(target);
        File.WriteAllText(Path.Combine(target, "inside.txt"), "keep");

        Assert.ThrowsAny<IOException>(() => SafeTensors.Write(target, [SafeTensor.FromFloats("w", [4096], new float[4096])]));

        Assert.Empty(Directory.GetFiles(directory));
        Assert.Equal("keep", File.ReadAllText(Path.Combine(target, "inside.txt")));
    }

    [Fact]
    public void Bad_writes_throw_before_touching_the_previous_file()
    {
        var path = PathOf("model.safetensors");
        SafeTensors.Write(path, [SafeTensor.FromFloats("w", [1], [1f])]);
        var before = File.ReadAllBytes(path);

        var duplicate = Assert.Throws<ArgumentException>(() =>
            SafeTensors.Write(path, [SafeTensor.FromFloats("w", [1], [1f]), SafeTensor.FromInts("w", [1], [2])]));
        Assert.Contains("'w' appears twice", duplicate.Message);
        // A tensor named like the metadata key would silently replace the metadata (or vanish on reading).
        var reserved = Assert.Throws<ArgumentException>(() =>
            SafeTensors.Write(path, [SafeTensor.FromFloats("__metadata__", [1], [1f])], new Dictionary<string, string> { ["a"] = "b" }));
        Assert.Contains("__metadata__", reserved.Message);

        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Single(Directory.GetFiles(directory));
    }

    [Fact]
    public void A_tensor_whose_data_does_not_match_its_shape_is_refused()
    {
        var error = Assert.Throws<ArgumentException>(() => new SafeTensor("w", SafeTensorType.F32, [2, 3], new byte[20]));
        Assert.Contains("'w'", error.Message);
        Assert.Contains("[2, 3]", error.Message);
        Assert.Contains("24 bytes, got 20", error.Message);
    }

    [Fact]
    public void A_truncated_body_names_the_tensor_that_is_cut()
    {
        var path = PathOf("cut.safetensors");
        SafeTensors.Write(path, [SafeTensor.FromFloats("first", [4], [1, 2, 3, 4]), SafeTensor.FromFloats("second", [4], [5, 6, 7, 8])]);
        var bytes = File.ReadAllBytes(path);
        foreach (var cut in new[] { 1, 4, 15 })
        {
            File.WriteAllBytes(path, bytes[..^cut]);
            var error = Assert.Throws<InvalidDataException>(() => SafeTensors.Read(path));
            Assert.Contains(path, error.Message);
            Assert.Contains("truncated", error.Message);
            Assert.Contains("'second'", error.Message);
        }
        // Cut into the first tensor: the first one named is the first one cut.
        File.WriteAllBytes(path, bytes[..^20]);
        Assert.Contains("'first'", Assert.Throws<InvalidDataException>(() => SafeTensors.Read(path)).Message);
    }

    [Fact]
    public void A_truncated_header_or_length_prefix_is_reported()
    {
        var path = PathOf("cut.safetensors");
        SafeTensors.Write(path, [SafeTensor.FromFloats("w", [2], [1, 2])]);
        var bytes = File.ReadAllBytes(path);

        File.WriteAllBytes(path, bytes[..5]);
        Assert.Contains("shorter than its 8-byte header length", Assert.Throws<InvalidDataException>(() => SafeTensors.Read(path)).Message);
        File.WriteAllBytes(path, bytes[..20]);
        Assert.Contains("the header needs", Assert.Throws<InvalidDataException>(() => SafeTensors.Read(path)).Message);
        File.WriteAllBytes(path, []);
        Assert.Throws<InvalidDataException>(() => SafeTensors.Read(path));
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(1L)]
    [InlineData(-8L)]
    [InlineData(100L * 1024 * 1024 + 1)]
    [InlineData(long.MaxValue)]
    public void A_header_length_out_of_range_is_reported(long length)
    {
        var bytes = new byte[64];
        BinaryPrimitives.WriteInt64LittleEndian(bytes, length);
        var path = PathOf("length.safetensors");
        File.WriteAllBytes(path, bytes);
        var error = Assert.Throws<InvalidDataException>(() => SafeTensors.Read(path));
        Assert.Contains($"header length {length} is out of range", error.Message);
    }

    [Theory]
    [InlineData("{not json", "malformed JSON header")]
    [InlineData("""{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}""", "malformed JSON header")]
    [InlineData("""[1, 2, 3]""", "not a JSON object")]
    [InlineData("""{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", "key 'w' appears twice")]
    [InlineData("""{"w":[1, 2]}""", "header entry 'w' is not an object")]
    [InlineData("""{"w":{"shape":[1],"data_offsets":[0,4]}}""", "tensor 'w' has no dtype")]
    [InlineData("""{"w":{"dtype":7,"shape":[1],"data_offsets":[0,4]}}""", "tensor 'w' has a malformed header entry")]
    [InlineData("""{"w":{"dtype":"F32","data_offsets":[0,4]}}""", "tensor 'w' has no shape")]
    [InlineData("""{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}""", "tensor 'w' has a malformed header entry")]
    [InlineData("""{"w":{"dtype":"F32","shape":[null],"data_offsets":[0,4]}}""", "tensor 'w' has a malformed header entry")]
    [InlineData("""{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}""", "tensor 'w' has a negative dimension")]
    [InlineData("""{"w":{"dtype":"F32","shape":[65536,65536,65536,65536],"data_offsets":[0,0]}}""", "tensor 'w' has shape [65536, 65536, 65536, 65536] whose byte size overflows")]
    [InlineData("""{"w":{"dtype":"F32","shape":[65536,65536,65536,16384],"data_offsets":[0,0]}}""", "tensor 'w' has shape [65536, 65536, 65536, 16384] whose byte size overflows")]
    [InlineData("""{"w":{"dtype":"F32","shape":[1]}}""", "tensor 'w' needs data_offsets [begin, end]")]
    [InlineData("""{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}""", "tensor 'w' needs data_offsets [begin, end]")]
    [InlineData("""{"w":{"dtype":"F32","shape":[1],"data_offsets":["0","4"]}}""", "tensor 'w' has a malformed header entry")]
    public void A_malformed_header_is_reported_with_the_file_and_tensor(string header, string expected)
    {
        var path = Raw("bad.safetensors", header, new byte[8]);
        var error = Assert.Throws<InvalidDataException>(() => SafeTensors.Read(path));
        Assert.Contains(path, error.Message);
        Assert.Contains(expected, error.Message);
    }

    [Theory]
    [InlineData("\0\0\0\0\0\0\0")]
    [InlineData("   \0\0")]
    [InlineData("")]
    public void A_duplicate_key_in_a_padded_header_is_named(string padding)
    {
        // Writers pad the header to 8 bytes with spaces; some pad with NULs. Either way the message names the key.
        var path = Raw("padded.safetensors",
            """{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""" + padding, new byte[4]);
        var error = Assert.Throws<InvalidDataException>(() => SafeTensors.Read(path));
        Assert.Equal($"'{path}' has a malformed JSON header: key 'w' appears twice.", error.Message);
    }

    [Theory]
    [InlineData("[0,8]", "needs 4 bytes but its data_offsets span 8")]
    [InlineData("[4,0]", "invalid data_offsets [4, 0]")]
    [InlineData("[-4,0]", "invalid data_offsets [-4, 0]")]
    [InlineData("[8,12]", "truncated")]
    public void Wrong_data_offsets_are_reported_with_the_tensor(string offsets, string expected)
    {
        var path = Raw("offsets.safetensors", $$$"""{"w":{"dtype":"F32","shape":[1],"data_offsets":{{{offsets}}}}}""", new byte[4]);
        var error = Assert.Throws<InvalidDataException>(() => SafeTensors.Read(path));
        Assert.Contains("'w'", error.Message);
        Assert.Contains(expected, error.Message);
    }

    [Theory]
    [InlineData("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", 12, "'b'")]
    [InlineData("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}""", 12, "'b'")]
    [InlineData("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", 8, "4 bytes after the last tensor")]
    public void Overlapping_gapped_or_trailing_data_is_reported(string header, int bodyLength, string expected)
    {
        // The format requires the tensors to tile the body exactly (as the reference implementation checks):
        // an overlap or a hole means a corrupt or hand-edited file.
        var path = Raw("tiling.safetensors", header, new byte[bodyLength]);
        var error = Assert.Throws<InvalidDataException>(() => SafeTensors.Read(path));
        Assert.Contains(expected, error.Message);
    }

    [Fact]
    public void A_body_larger_than_one_array_is_reported_not_crashed_on()
    {
        var path = Raw("huge.safetensors", """{"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}""", new byte[4]);
        using (var stream = new FileStream(path, FileMode.Open))
            stream.SetLength((long)Array.MaxLength + 1024); // sparse: no disk space used
        var error = Assert.Throws<InvalidDataException>(() => SafeTensors.Read(path));
        Assert.Contains("are not supported", error.Message);
    }

    [Theory]
    [InlineData("BF16")]
    [InlineData("F16")]
    [InlineData("I8")]
    [InlineData("f32")]
    public void An_unsupported_dtype_is_reported_with_the_tensor(string dtype)
    {
        var path = Raw("dtype.safetensors", $$$"""{"w":{"dtype":"{{{dtype}}}","shape":[2],"data_offsets":[0,4]}}""", new byte[4]);
        var error = Assert.Throws<InvalidDataException>(() => SafeTensors.Read(path));
        Assert.Contains($"tensor 'w' has unsupported dtype '{dtype}'", error.Message);
    }

    [Fact]
    public void Missing_tensors_wrong_shapes_and_bad_conversions_name_the_tensor()
    {
        var path = PathOf("model.safetensors");
        SafeTensors.Write(path, [SafeTensor.FromFloats("encoder.weight", [2, 3], [1, 2, 3, 4, 5, 6.5f]), SafeTensor.FromLongs("big", [1], [1L << 40])]);
        var file = SafeTensors.Read(path);

        var missing = Assert.Throws<InvalidDataException>(() => file.Get("decoder.weight"));
        Assert.Contains($"'{path}' has no tensor 'decoder.weight'", missing.Message);
        var shape = Assert.Throws<InvalidDataException>(() => file.Floats("encoder.weight", [3, 2]));
        Assert.Contains("tensor 'encoder.weight' has shape [2, 3], expected [3, 2]", shape.Message);
        Assert.Contains("tensor 'encoder.weight' is not a scalar (shape [2, 3])", Assert.Throws<InvalidDataException>(() => file.Scalar("encoder.weight")).Message);
        Assert.Contains("'encoder.weight' holds non-integral value 6.5", Assert.Throws<InvalidDataException>(() => file.Ints("encoder.weight")).Message);
        Assert.Contains("'big' holds 1099511627776, outside the 32-bit range", Assert.Throws<InvalidDataException>(() => file.Ints("big")).Message);
        Assert.Contains("does not exist", Assert.Throws<FileNotFoundException>(() => SafeTensors.Read(PathOf("nope.safetensors"))).Message);
    }

    private static List<SafeTensor> EveryDtype() =>
    [
        SafeTensor.FromFloats("f32", [2, 3], [1.5f, -0f, float.NaN, float.PositiveInfinity, float.Epsilon, -3.25e38f]),
        new SafeTensor("f64", SafeTensorType.F64, [2], MemoryMarshal.AsBytes<double>([Math.PI, -1e300]).ToArray()),
        SafeTensor.FromLongs("i64", [3], [long.MinValue, 0, long.MaxValue]),
        SafeTensor.FromInts("i32", [2, 2], [int.MinValue, -1, 0, int.MaxValue]),
        new SafeTensor("u8", SafeTensorType.U8, [3], [0, 1, 255]),
        new SafeTensor("bool", SafeTensorType.Bool, [3], [1, 0, 1]),
        SafeTensor.FromFloats("scalar", [], [2.5f]),
        SafeTensor.FromFloats("empty", [0, 3], []),
    ];

    /// <summary>A file with exactly this header text (no padding) and body.</summary>
    private string Raw(string name, string header, byte[] body)
    {
        var headerBytes = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + headerBytes.Length + body.Length];
        BinaryPrimitives.WriteInt64LittleEndian(bytes, headerBytes.Length);
        headerBytes.CopyTo(bytes, 8);
        body.CopyTo(bytes, 8 + headerBytes.Length);
        var path = PathOf(name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private sealed class NonSeekableStream(byte[] bytes) : MemoryStream(bytes)
    {
        public override bool CanSeek => false;

        public override long Length => throw new NotSupportedException();

        public override long Position
        {
            get => throw new NotSupportedException();
            set => throw new NotSupportedException();
        }

        public override long Seek(long offset, SeekOrigin loc) => throw new NotSupportedException();
    }
}
