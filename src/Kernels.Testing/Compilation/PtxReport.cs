using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;
using GpuTransformer.Kernels.Backends;
using ILGPU.Runtime.Cuda;

namespace GpuTransformer.Kernels.Compilation;

/// <summary>One kernel instantiation in a <see cref="PtxReport"/>.</summary>
/// <param name="Name"><c>Family.Kernel[instantiation]</c>, e.g. <c>MatmulKernels.TiledKernel[Shape128x128,LayoutNN]</c>.</param>
/// <param name="FileName">Where <see cref="PtxReport.WritePtx"/> puts its PTX: letters, digits, '.', '_' and '-' only.</param>
/// <param name="Kernel">The entry point and the tunings that list it.</param>
/// <param name="Statistics">What its PTX shows; null when it did not compile.</param>
/// <param name="Ptx">The PTX text; null when it did not compile.</param>
/// <param name="Error">The compiler's message when it did not compile.</param>
public sealed record PtxKernelReport(
    string Name,
    string FileName,
    [property: JsonIgnore] OfflineKernel Kernel,
    PtxStatistics? Statistics,
    [property: JsonIgnore] string? Ptx,
    string? Error);

/// <summary>
/// Every kernel instantiation one backend's tuning loads, compiled offline to PTX (no GPU)
/// and read with <see cref="PtxStatistics"/>: local memory, load and store widths,
/// multiply-adds per shared load in the hottest loop, barriers. The <c>ptx</c> command of the
/// bench app prints it; the tests assert on the same numbers; <see cref="WritePtx"/> leaves
/// one <c>.ptx</c> per kernel for <c>ptxas -v</c> on a GPU machine.
/// </summary>
public sealed partial class PtxReport
{
    /// <summary>The tunings a report can be made for, as <c>--tuning</c> names them.</summary>
    public static IReadOnlyList<string> TuningNames { get; } = ["cuda", "opencl-gpu", "pocl", "cpu"];

    private PtxReport(string tuning, OfflineTarget target, IReadOnlyList<PtxKernelReport> kernels)
    {
        Tuning = tuning;
        Target = target;
        Kernels = kernels;
    }

    /// <summary>The tuning whose instantiations were compiled (one of <see cref="TuningNames"/>).</summary>
    public string Tuning { get; }

    /// <summary>The PTX target they were compiled for.</summary>
    public OfflineTarget Target { get; }

    /// <summary>One entry per kernel instantiation, by family and name.</summary>
    public IReadOnlyList<PtxKernelReport> Kernels { get; }

    /// <summary>The representative device (<see cref="OfflineCompiler.RepresentativeDevices"/>) whose tuning <paramref name="tuning"/> names.</summary>
    /// <exception cref="ArgumentException">Not one of <see cref="TuningNames"/>.</exception>
    public static DeviceDescription DeviceFor(string tuning)
    {
        var devices = OfflineCompiler.RepresentativeDevices;
        DeviceDescription? Find(Backend backend, DeviceKind? kind) =>
            devices.FirstOrDefault(d => d.Backend == backend && (kind is null || d.Kind == kind));
        var device = tuning switch
        {
            "cuda" => Find(Backend.Cuda, null),
            "opencl-gpu" => Find(Backend.OpenCL, DeviceKind.Gpu),
            "pocl" => Find(Backend.OpenCL, DeviceKind.Cpu),
            "cpu" => Find(Backend.Cpu, null),
            _ => null,
        };
        return device ?? throw new ArgumentException(
            $"Unknown tuning '{tuning}'; expected one of {string.Join(", ", TuningNames)}.");
    }

    /// <summary>
    /// The PTX target for an architecture named like <c>sm_90</c>: sm_80 and sm_90 are
    /// <see cref="OfflineTarget.PtxSm80"/> and <see cref="OfflineTarget.PtxSm90"/> (what the
    /// tests compile); any other <c>sm_XY</c> gets PTX ISA 8.8.
    /// </summary>
    /// <exception cref="ArgumentException">The name is not <c>sm_</c> followed by two or three digits.</exception>
    public static OfflineTarget TargetFor(string architecture)
    {
        ArgumentNullException.ThrowIfNull(architecture);
        var match = ArchitectureName().Match(architecture);
        if (!match.Success)
            throw new ArgumentException($"Architecture '{architecture}' is not of the form sm_90.");
        var digits = match.Groups["digits"].Value;
        var major = int.Parse(digits[..^1], CultureInfo.InvariantCulture);
        var minor = digits[^1] - '0';
        return (major, minor) switch
        {
            (8, 0) => OfflineTarget.PtxSm80,
            (9, 0) => OfflineTarget.PtxSm90,
            _ => OfflineTarget.Ptx(new CudaArchitecture(major, minor), CudaInstructionSet.ISA_88),
        };
    }

    /// <summary>Compiles every kernel instantiation of <paramref name="tuning"/> for <paramref name="target"/> (default sm_90) and reads each.</summary>
    public static PtxReport Create(string tuning, OfflineTarget? target = null)
    {
        var device = DeviceFor(tuning);
        target ??= OfflineTarget.PtxSm90;
        if (target.Kind != OfflineTargetKind.Ptx)
            throw new ArgumentException($"{target} is not a PTX target.", nameof(target));
        var kernels = OfflineCompiler.DiscoverKernels(devices: [device]);
        using var compiler = new OfflineCompiler();
        var files = new HashSet<string>(StringComparer.Ordinal);
        var entries = new List<PtxKernelReport>();
        foreach (var kernel in kernels)
        {
            var result = compiler.Compile(kernel, target);
            var name = NameOf(kernel);
            var file = FileNameOf(name);
            for (var n = 2; !files.Add(file); n++)
                file = $"{FileNameOf(name)[..^".ptx".Length]}-{n}.ptx";
            entries.Add(new PtxKernelReport(
                name, file, kernel,
                result.Code is null ? null : PtxStatistics.Parse(result.Code),
                result.Code, result.Error));
        }
        return new PtxReport(tuning, target, entries);
    }

    /// <summary>
    /// <c>Family.Kernel[instantiation]</c>: the instantiation lists the type arguments that are
    /// not themselves generic (tile shapes, layouts, head bounds); register trees and depth
    /// steps follow from the shape and are left out.
    /// </summary>
    public static string NameOf(OfflineKernel kernel)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        var method = kernel.Entry.Method;
        var name = $"{kernel.Family.Name}.{method.Name}";
        if (!method.IsGenericMethod)
            return name;
        var arguments = method.GetGenericArguments().Where(a => !a.IsGenericType).Select(a => a.Name);
        return $"{name}[{string.Join(",", arguments)}]";
    }

    /// <summary>A file name for <paramref name="name"/> that any shell takes as is: brackets and commas become '.' and '_'.</summary>
    public static string FileNameOf(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        var safe = UnsafeFileCharacters().Replace(name.Replace('[', '.').Replace(',', '_').Replace("]", "", StringComparison.Ordinal), "-");
        return safe + ".ptx";
    }

    /// <summary>Writes each compiled kernel's PTX to <paramref name="directory"/> (created if missing); returns the paths.</summary>
    public IReadOnlyList<string> WritePtx(string directory)
    {
        Directory.CreateDirectory(directory);
        var paths = new List<string>();
        foreach (var kernel in Kernels.Where(k => k.Ptx is not null))
        {
            var path = Path.Combine(directory, kernel.FileName);
            File.WriteAllText(path, kernel.Ptx);
            paths.Add(path);
        }
        return paths;
    }

    /// <summary>The report as one markdown table (plus a legend), under the given heading lines.</summary>
    public string ToMarkdown(IEnumerable<string>? preamble = null)
    {
        var text = new StringBuilder();
        foreach (var line in preamble ?? [])
            text.AppendLine(line);
        text.AppendLine(CultureInfo.InvariantCulture,
            $"Tuning `{Tuning}` ({DeviceFor(Tuning).Name}), PTX for {Target.Name} (ILGPU writes `.target sm_{Target.PtxTargetArchitecture!.Value.Major}{Target.PtxTargetArchitecture!.Value.Minor}`, ISA {Target.InstructionSet!.Value.Major}.{Target.InstructionSet!.Value.Minor}), {Kernels.Count} kernel instantiations.");
        text.AppendLine();
        text.AppendLine("| kernel | shared B | local B | ld/st.local | ld.global v4/v2/s | st.global v4/v2/s | ld.shared v4/v2/s | st.shared v4/v2/s | fma + mul·add | bar.sync | hot loop ld.shared v4/v2/s | hot loop fma + mul·add | per shared load | launch bounds |");
        text.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        foreach (var kernel in Kernels)
        {
            if (kernel.Statistics is not { } s)
            {
                text.AppendLine(CultureInfo.InvariantCulture, $"| `{kernel.Name}` | did not compile: {kernel.Error?.Replace('|', '/')} |");
                continue;
            }
            var k = s.Kernel;
            var hot = s.HotLoop;
            var bounds = s.MaxThreads is null ? "" : $"{s.MaxThreads} threads" + (s.MinGroupsPerMultiprocessor is { } min ? $", ≥ {min}/SM" : "");
            text.AppendLine(CultureInfo.InvariantCulture,
                $"| `{kernel.Name}` | {s.SharedBytes} | {s.LocalBytes} | {k.LocalLoads}/{k.LocalStores} | {k.GlobalLoads} | {k.GlobalStores} | {k.SharedLoads} | {k.SharedStores} | " +
                $"{k.Fma} + {k.MulAddPairs} | {k.Barriers} | {hot?.SharedLoads.ToString() ?? "–"} | {(hot is null ? "–" : $"{hot.Value.Fma} + {hot.Value.MulAddPairs}")} | " +
                $"{(hot is null ? "–" : Ratio(hot.Value.MultiplyAddsPerSharedLoad))} | {bounds} |");
        }
        text.AppendLine();
        text.AppendLine("""
            Columns: static shared memory and ILGPU's local (stack) arrays in bytes; `ld.local`/`st.local` instructions;
            global and shared loads and stores as 128-bit (`.v4`) / 64-bit (`.v2`) / scalar instructions; float
            multiply-adds as `fma.f32` + `mul.f32` whose result feeds one `add`/`sub` and nothing else (ILGPU writes
            `a*b+c` that way; ptxas contracts such pairs into FFMA by default, which only SASS on a GPU confirms);
            `bar.sync`; the same for the hottest loop (the loop whose own body, nested loops excluded, has the most
            multiply-adds: a product's inner loop) and its multiply-adds per shared-load instruction; `.maxntid` /
            `.minnctapersm` from a `KernelSpecialization`. Counts are of instructions in the text, not executions.
            """);
        return text.ToString();
    }

    /// <summary>The report as JSON: tuning, target and per kernel its name, file name, statistics or error.</summary>
    public string ToJson()
    {
        return JsonSerializer.Serialize(
            new
            {
                tuning = Tuning,
                target = Target.Name,
                ptxTarget = $"sm_{Target.PtxTargetArchitecture!.Value.Major}{Target.PtxTargetArchitecture!.Value.Minor}",
                isa = $"{Target.InstructionSet!.Value.Major}.{Target.InstructionSet!.Value.Minor}",
                kernels = Kernels,
            },
            JsonOptions);
    }

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    private static string Ratio(double value) =>
        double.IsPositiveInfinity(value) ? "∞" : value.ToString("0.##", CultureInfo.InvariantCulture);

    [GeneratedRegex(@"^sm_(?<digits>\d{2,3})$")]
    private static partial Regex ArchitectureName();

    [GeneratedRegex(@"[^A-Za-z0-9._-]")]
    private static partial Regex UnsafeFileCharacters();
}
