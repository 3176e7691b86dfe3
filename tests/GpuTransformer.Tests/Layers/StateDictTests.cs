namespace GpuTransformer.Tests.Layers;

/// <summary>
/// Saving and loading a module's parameters as safetensors with state_dict names: round trip,
/// metadata and config, every kind of mismatch named in one error with nothing half-loaded,
/// dtypes, name prefixes, format versions and atomic saves. Uses a tiny test-only module
/// (two parameters and a child) on every backend present (uploads and downloads only; no kernels run).
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class StateDictTests(Devices devices) : IDisposable
{
    private readonly string directory = Directory.CreateTempSubdirectory("state-dict-tests-").FullName;

    public void Dispose() => Directory.Delete(directory, recursive: true);

    private string PathOf(string name) => Path.Combine(directory, name);

    /// <summary>Parameters <c>weight</c> [3, 2], <c>bias</c> [3] and <c>child.scale</c> [4].</summary>
    private sealed class Tiny : Module
    {
        public Tiny(ComputeDevice device)
            : base(device)
        {
            Weight = Parameter("weight", [3, 2], decay: true);
            Bias = Parameter("bias", [3], decay: false);
            Inner = Child("child", new Leaf(device));
        }

        public Parameter Weight { get; }

        public Parameter Bias { get; }

        public Leaf Inner { get; }
    }

    private sealed class Leaf : Module
    {
        public Leaf(ComputeDevice device)
            : base(device) => Scale = Parameter("scale", [4], decay: false);

        public Parameter Scale { get; }
    }

    /// <summary>A module with two parameters of the same name (a mistake StateDict must refuse).</summary>
    private sealed class Clashing : Module
    {
        public Clashing(ComputeDevice device)
            : base(device)
        {
            Parameter("weight", [1], decay: false);
            Parameter("weight", [2], decay: false);
        }
    }

    private static readonly Dictionary<string, float[]> Values = new()
    {
        ["weight"] = [1.5f, -2.25f, 3e-8f, -0f, 1e30f, 0.1f],
        ["bias"] = [7f, 8f, -9.125f],
        ["child.scale"] = [0.5f, 0.25f, float.Epsilon, -1f],
    };

    private static Tiny Filled(ComputeDevice device)
    {
        var module = new Tiny(device);
        foreach (var parameter in module.Parameters())
            parameter.Value.CopyFrom(Values[parameter.Name]);
        return module;
    }

    private static Dictionary<string, float[]> Snapshot(Module module) =>
        module.Parameters().ToDictionary(p => p.Name, p => p.Value.ToArray());

    /// <summary>A file with the tiny module's tensors, changed by <paramref name="edit"/>.</summary>
    private string Hand(string name, Action<List<SafeTensor>> edit, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var tensors = new List<SafeTensor>
        {
            SafeTensor.FromFloats("weight", [3, 2], Values["weight"]),
            SafeTensor.FromFloats("bias", [3], Values["bias"]),
            SafeTensor.FromFloats("child.scale", [4], Values["child.scale"]),
        };
        edit(tensors);
        var path = PathOf(name);
        SafeTensors.Write(path, tensors, metadata);
        return path;
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Save_then_load_round_trips_every_parameter_bit_exactly_under_its_state_dict_name(string backend)
    {
        var device = devices.Get(backend);
        using var source = Filled(device);
        var path = PathOf("tiny.safetensors");
        StateDict.Save(source, path, "tiny", "{\"d\":1}", new Dictionary<string, string> { ["step"] = "42" });

        var file = SafeTensors.Read(path);
        Assert.Equal(["bias", "child.scale", "weight"], file.Tensors.Keys.Order(StringComparer.Ordinal));
        Assert.All(file.Tensors.Values, t => Assert.Equal(SafeTensorType.F32, t.Type));
        Assert.Equal([3, 2], file.Get("weight").Shape);
        Assert.Equal(StateDict.Format, file.Metadata[StateDict.FormatKey]);
        Assert.Equal("1", file.Metadata[StateDict.FormatVersionKey]);
        Assert.Equal("tiny", StateDict.ModelKind(file));
        Assert.Equal("{\"d\":1}", file.Metadata[StateDict.ConfigKey]);
        Assert.Equal("42", file.Metadata["step"]);

        using var target = new Tiny(device);
        var loaded = StateDict.Load(target, path);
        Assert.Equal("42", loaded.Metadata["step"]);
        foreach (var (name, values) in Snapshot(target))
        {
            Assert.Equal(Values[name].Select(BitConverter.SingleToInt32Bits), values.Select(BitConverter.SingleToInt32Bits));
        }
        Assert.All(target.Parameters(), p => Assert.All(p.Gradient.ToArray(), g => Assert.Equal(0f, g)));
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Config_helpers_read_back_the_saved_config_and_refuse_the_other_model_kind(string backend)
    {
        var device = devices.Get(backend);
        using var module = Filled(device);
        var transformer = new TransformerConfig { DModel = 16, NHead = 2, NormFirst = true, Activation = "gelu", PadId = 0, ShareEmbeddings = true };
        var language = new LanguageModelConfig { DModel = 24, NHead = 3, NumLayers = 5, TieWeights = false, PadId = 3 };
        StateDict.Save(module, PathOf("t.safetensors"), transformer.Kind, transformer.ToJson());
        StateDict.Save(module, PathOf("l.safetensors"), language.Kind, language.ToJson());

        var t = SafeTensors.Read(PathOf("t.safetensors"));
        var l = SafeTensors.Read(PathOf("l.safetensors"));
        Assert.Equal(StateDict.TransformerKind, StateDict.ModelKind(t));
        Assert.Equal(transformer, StateDict.ReadTransformerConfig(t));
        Assert.Equal(language, StateDict.ReadLanguageModelConfig(l));
        var wrongKind = Assert.Throws<InvalidDataException>(() => StateDict.ReadLanguageModelConfig(t));
        Assert.Contains("'transformer' model, not a 'language_model'", wrongKind.Message);

        var bad = SafeTensors.Read(Hand("bad-config.safetensors", _ => { }, new Dictionary<string, string>
        {
            [StateDict.ModelKey] = StateDict.TransformerKind,
            [StateDict.ConfigKey] = "{\"d_model\":10,\"nhead\":3}",
        }));
        var inconsistent = Assert.Throws<InvalidDataException>(() => StateDict.ReadTransformerConfig(bad));
        Assert.Contains("bad-config.safetensors", inconsistent.Message);
        Assert.Contains("divisible by nhead", inconsistent.Message);
        var unknown = SafeTensors.Read(Hand("no-meta.safetensors", _ => { }));
        Assert.Contains("no 'model' entry", Assert.Throws<InvalidDataException>(() => StateDict.ModelKind(unknown)).Message);
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Missing_tensors_are_named_with_their_shapes_and_nothing_is_loaded(string backend)
    {
        var device = devices.Get(backend);
        var path = Hand("missing.safetensors", tensors =>
        {
            tensors.RemoveAll(t => t.Name is "child.scale" or "bias");
            tensors[0] = SafeTensor.FromFloats("weight", [3, 2], new float[6]);
        });
        using var module = Filled(device);

        var error = Assert.Throws<InvalidDataException>(() => StateDict.Load(module, path));
        Assert.Contains("missing.safetensors", error.Message);
        Assert.Contains("missing tensors: bias [3], child.scale [4]", error.Message);
        Assert.Equal(Values["weight"], Snapshot(module)["weight"]); // the present tensor was not copied either
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Extra_tensors_are_named_unless_ignored(string backend)
    {
        var device = devices.Get(backend);
        var path = Hand("extra.safetensors", tensors =>
        {
            tensors.Add(SafeTensor.FromFloats("optimizer.m.weight", [3, 2], new float[6]));
            tensors.Add(SafeTensor.FromLongs("step", [], [7L]));
        });
        using var module = new Tiny(device);

        var error = Assert.Throws<InvalidDataException>(() => StateDict.Load(module, path));
        Assert.Contains("tensors the model does not have (ignore them with IgnoreExtraTensors): optimizer.m.weight, step", error.Message);
        Assert.DoesNotContain("missing", error.Message);
        Assert.All(Snapshot(module).Values, values => Assert.All(values, v => Assert.Equal(0f, v)));

        StateDict.Load(module, path, new StateDictLoadOptions { IgnoreExtraTensors = true });
        Assert.Equal(Values["child.scale"], Snapshot(module)["child.scale"]);
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void A_wrong_shape_names_the_tensor_and_both_shapes_and_all_problems_come_in_one_error(string backend)
    {
        var device = devices.Get(backend);
        var path = Hand("shape.safetensors", tensors =>
        {
            tensors[0] = SafeTensor.FromFloats("weight", [2, 3], Values["weight"]);
            tensors.RemoveAt(1);
            tensors.Add(SafeTensor.FromFloats("stray", [1], [1f]));
        });
        using var module = new Tiny(device);

        var error = Assert.Throws<InvalidDataException>(() => StateDict.Load(module, path));
        Assert.Contains("shapes differ: weight: file [2, 3], model [3, 2]", error.Message);
        Assert.Contains("missing tensors: bias [3]", error.Message);
        Assert.Contains(": stray", error.Message);
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void F64_is_rounded_to_float32_and_integer_dtypes_are_refused(string backend)
    {
        var device = devices.Get(backend);
        double[] precise = [0.1, 1.0 / 3, -2e-40, 1e300];
        var path = Hand("f64.safetensors", tensors => tensors[2] = new SafeTensor(
            "child.scale", SafeTensorType.F64, [4], precise.SelectMany(BitConverter.GetBytes).ToArray()));
        using var module = new Tiny(device);
        StateDict.Load(module, path);
        Assert.Equal(precise.Select(v => (float)v), Snapshot(module)["child.scale"]);

        var integer = Hand("i32.safetensors", tensors => tensors[1] = SafeTensor.FromInts("bias", [3], [1, 2, 3]));
        var error = Assert.Throws<InvalidDataException>(() => StateDict.Load(module, integer));
        Assert.Contains("parameters must be F32 (or F64, rounded): bias is I32", error.Message);
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void A_prefix_is_added_on_save_and_stripped_on_load_and_names_outside_it_are_extras(string backend)
    {
        var device = devices.Get(backend);
        using var source = Filled(device);
        var path = PathOf("wrapped.safetensors");
        StateDict.Save(source, path, "tiny", "{}", prefix: "model.transformer");
        Assert.Equal(
            ["model.transformer.bias", "model.transformer.child.scale", "model.transformer.weight"],
            SafeTensors.Read(path).Tensors.Keys.Order(StringComparer.Ordinal));

        using var target = new Tiny(device);
        var unprefixed = Assert.Throws<InvalidDataException>(() => StateDict.Load(target, path));
        Assert.Contains("missing tensors: weight [3, 2], bias [3], child.scale [4]", unprefixed.Message);
        StateDict.Load(target, path, new StateDictLoadOptions { Prefix = "model.transformer." });
        Assert.Equal(Values["weight"], Snapshot(target)["weight"]);

        // A PyTorch wrapper's other tensors sit outside the prefix.
        var mixed = Hand("mixed.safetensors", tensors =>
        {
            for (var i = 0; i < tensors.Count; i++)
                tensors[i] = new SafeTensor("net." + tensors[i].Name, tensors[i].Type, tensors[i].Shape, tensors[i].Data);
            tensors.Add(SafeTensor.FromFloats("head.weight", [2], [1f, 2f]));
        });
        var outside = Assert.Throws<InvalidDataException>(() => StateDict.Load(target, mixed, new StateDictLoadOptions { Prefix = "net" }));
        Assert.Contains("(names prefixed with 'net.')", outside.Message);
        Assert.Contains("does not have (ignore them with IgnoreExtraTensors): head.weight", outside.Message);
        StateDict.Load(target, mixed, new StateDictLoadOptions { Prefix = "net", IgnoreExtraTensors = true });
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void A_failed_save_keeps_the_previous_file_and_leaves_no_temporary_file(string backend)
    {
        var device = devices.Get(backend);
        var path = PathOf("model.safetensors");
        using (var first = Filled(device))
            StateDict.Save(first, path, "tiny", "{}");
        var before = File.ReadAllBytes(path);

        using var broken = Filled(device);
        broken.Inner.Scale.Dispose(); // reading the last parameter fails, after the others were read
        Assert.Throws<ObjectDisposedException>(() => StateDict.Save(broken, path, "tiny", "{\"new\":true}"));
        using var fine = Filled(device);
        var reserved = Assert.Throws<ArgumentException>(() =>
            StateDict.Save(fine, path, "tiny", "{}", new Dictionary<string, string> { [StateDict.ConfigKey] = "other" }));
        Assert.Contains("'config' is reserved", reserved.Message);
        // The rename fails (the target is a directory): nothing is left behind.
        var taken = PathOf("taken");
        Directory.CreateDirectory(taken);
        Assert.ThrowsAny<IOException>(() => StateDict.Save(fine, taken, "tiny", "{}"));

        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Equal(["model.safetensors"], Directory.GetFiles(directory).Select(Path.GetFileName));
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Newer_format_versions_are_refused_and_other_tools_format_tags_are_accepted(string backend)
    {
        var device = devices.Get(backend);
        using var module = new Tiny(device);
        var newer = Hand("newer.safetensors", _ => { }, new Dictionary<string, string>
        {
            [StateDict.FormatKey] = StateDict.Format,
            [StateDict.FormatVersionKey] = "2",
        });
        Assert.Contains("format_version 2; this version of GpuTransformer reads up to 1",
            Assert.Throws<InvalidDataException>(() => StateDict.Load(module, newer)).Message);
        var garbled = Hand("garbled.safetensors", _ => { }, new Dictionary<string, string>
        {
            [StateDict.FormatKey] = StateDict.Format,
            [StateDict.FormatVersionKey] = "one",
        });
        Assert.Contains("invalid format_version 'one'", Assert.Throws<InvalidDataException>(() => StateDict.Load(module, garbled)).Message);

        // safetensors.torch.save_file(…, metadata={"format": "pt"}) is what PyTorch users have.
        var pytorch = Hand("pt.safetensors", _ => { }, new Dictionary<string, string> { [StateDict.FormatKey] = "pt" });
        StateDict.Load(module, pytorch);
        Assert.Equal(Values["bias"], Snapshot(module)["bias"]);
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Truncated_files_and_duplicate_parameter_names_give_clear_errors(string backend)
    {
        var device = devices.Get(backend);
        using var module = Filled(device);
        var path = PathOf("cut.safetensors");
        StateDict.Save(module, path, "tiny", "{}");
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..^5]);
        var truncated = Assert.Throws<InvalidDataException>(() => StateDict.Load(module, path));
        Assert.Contains("cut.safetensors", truncated.Message);
        Assert.Contains("truncated", truncated.Message);
        Assert.Throws<FileNotFoundException>(() => StateDict.Load(module, PathOf("absent.safetensors")));

        using var clashing = new Clashing(device);
        var duplicate = Assert.Throws<InvalidOperationException>(() => StateDict.Save(clashing, PathOf("c.safetensors"), "x", "{}"));
        Assert.Contains("2 parameters named 'weight'", duplicate.Message);
        var single = PathOf("single.safetensors");
        SafeTensors.Write(single, [SafeTensor.FromFloats("weight", [1], [1f])]);
        Assert.Throws<InvalidOperationException>(() => StateDict.Load(clashing, single));
    }
}
