using System.Text.RegularExpressions;

namespace GpuTransformer.Kernels.Compilation;

/// <summary>Loads or stores of one state space, by width: 128-bit (<c>.v4</c> of 32-bit words), 64-bit (<c>.v2</c>) and scalar.</summary>
/// <param name="V4">Four-word vector accesses (<c>ld.shared.v4.f32</c> …).</param>
/// <param name="V2">Two-word vector accesses.</param>
/// <param name="Scalar">One-word (or narrower) accesses.</param>
public readonly record struct PtxAccessCounts(int V4, int V2, int Scalar)
{
    /// <summary>Instructions of any width.</summary>
    public int Total => V4 + V2 + Scalar;

    /// <summary>Words moved (a v4 moves 4, a v2 2, a scalar 1): how many scalar accesses they replace.</summary>
    public int Words => 4 * V4 + 2 * V2 + Scalar;

    /// <summary><c>v4/v2/scalar</c>, as the report prints it.</summary>
    public override string ToString() => $"{V4}/{V2}/{Scalar}";

    internal PtxAccessCounts Add(int width) => width switch
    {
        4 => this with { V4 = V4 + 1 },
        2 => this with { V2 = V2 + 1 },
        _ => this with { Scalar = Scalar + 1 },
    };
}

/// <summary>
/// Counts over a stretch of PTX instructions (a whole kernel, or the body of one loop):
/// memory accesses by state space and width, float multiply-adds and barriers.
/// </summary>
/// <param name="GlobalLoads"><c>ld.global</c> (including <c>.nc</c>) by width.</param>
/// <param name="GlobalStores"><c>st.global</c> by width.</param>
/// <param name="SharedLoads"><c>ld.shared</c> by width.</param>
/// <param name="SharedStores"><c>st.shared</c> by width.</param>
/// <param name="LocalLoads"><c>ld.local</c> instructions (registers spilled by ILGPU to the stack frame).</param>
/// <param name="LocalStores"><c>st.local</c> instructions.</param>
/// <param name="Fma"><c>fma.*.f32</c> instructions.</param>
/// <param name="Mul"><c>mul.f32</c> instructions (any rounding).</param>
/// <param name="Add"><c>add.f32</c> and <c>sub.f32</c> instructions.</param>
/// <param name="MulAddPairs">
/// <c>mul.f32</c> whose result feeds exactly one <c>add.f32</c>/<c>sub.f32</c> and nothing
/// else: how ILGPU writes <c>a*b + c</c>; ptxas contracts such pairs into FFMA by default
/// (<c>--fmad=true</c>), which only the SASS on a GPU can confirm.
/// </param>
/// <param name="Barriers"><c>bar.sync</c> / <c>barrier.sync</c> instructions.</param>
public readonly record struct PtxCounts(
    PtxAccessCounts GlobalLoads,
    PtxAccessCounts GlobalStores,
    PtxAccessCounts SharedLoads,
    PtxAccessCounts SharedStores,
    int LocalLoads,
    int LocalStores,
    int Fma,
    int Mul,
    int Add,
    int MulAddPairs,
    int Barriers)
{
    /// <summary>Float multiply-adds: <see cref="Fma"/> plus <see cref="MulAddPairs"/>.</summary>
    public int MultiplyAdds => Fma + MulAddPairs;

    /// <summary>Multiply-adds per shared-memory load instruction (∞ with no shared load, 0 with neither).</summary>
    public double MultiplyAddsPerSharedLoad =>
        SharedLoads.Total == 0 ? (MultiplyAdds == 0 ? 0 : double.PositiveInfinity) : (double)MultiplyAdds / SharedLoads.Total;
}

/// <summary>
/// What ILGPU's PTX for one kernel says about how it will run, read from the text alone (no
/// GPU, no ptxas): static shared and local (stack) memory, loads and stores by state space and
/// width, multiply-adds, barriers, launch bounds, and the same counts for its hottest loop —
/// the loop whose own body (nested loops excluded) holds the most multiply-adds, i.e. the
/// inner loop of a product. <see cref="Parse"/> is the one reader of PTX the report, the
/// bench command and the tests share.
/// </summary>
/// <param name="Entry">The <c>.entry</c> name (ILGPU writes <c>Kernel_</c> + the .NET method name).</param>
/// <param name="SharedBytes">Bytes of <c>.shared</c> arrays declared (static shared memory per group).</param>
/// <param name="LocalBytes">Bytes of <c>.local</c> arrays declared: ILGPU's stack frame (local arrays it could not keep in registers).</param>
/// <param name="Kernel">Counts over the whole kernel.</param>
/// <param name="HotLoop">Counts over the hottest loop's own body; null when no loop holds a multiply-add.</param>
/// <param name="Loops">Loops found (backward branches).</param>
/// <param name="MaxThreads"><c>.maxntid</c> (from a <c>KernelSpecialization</c>), or null.</param>
/// <param name="MinGroupsPerMultiprocessor"><c>.minnctapersm</c>, or null.</param>
public sealed partial record PtxStatistics(
    string Entry,
    long SharedBytes,
    long LocalBytes,
    PtxCounts Kernel,
    PtxCounts? HotLoop,
    int Loops,
    int? MaxThreads,
    int? MinGroupsPerMultiprocessor)
{
    /// <summary>Statistics of the first (ILGPU writes exactly one) <c>.entry</c> in <paramref name="ptx"/>; helper <c>.func</c>s called from it count as part of it.</summary>
    /// <exception cref="ArgumentException">The text holds no <c>.entry</c>.</exception>
    public static PtxStatistics Parse(string ptx)
    {
        ArgumentNullException.ThrowIfNull(ptx);
        var entry = EntryName().Match(ptx);
        if (!entry.Success)
            throw new ArgumentException("The PTX text has no .entry directive.", nameof(ptx));

        var lines = ptx.Split('\n').Select(StripComment).ToList();
        long shared = 0, local = 0;
        foreach (var line in lines)
        {
            var array = ArrayDeclaration().Match(line);
            if (!array.Success)
                continue;
            var bytes = ElementBytes(array.Groups["type"].Value) * long.Parse(array.Groups["count"].Value, System.Globalization.CultureInfo.InvariantCulture);
            if (array.Groups["space"].Value == "shared")
                shared += bytes;
            else
                local += bytes;
        }

        var instructions = lines.Select((text, index) => (Text: text.Trim(), Index: index))
            .Where(l => l.Text.Length > 0)
            .ToList();
        var uses = RegisterUses(instructions.Select(i => i.Text));
        var loops = FindLoops(lines);
        PtxCounts? hot = null;
        foreach (var loop in loops)
        {
            var nested = loops.Where(other => other != loop && other.Start >= loop.Start && other.End <= loop.End).ToList();
            var body = instructions.Where(i => i.Index >= loop.Start && i.Index <= loop.End && !nested.Any(n => i.Index >= n.Start && i.Index <= n.End));
            var counts = Count(body.Select(i => i.Text), uses);
            if (counts.MultiplyAdds > 0 && (hot is null || counts.MultiplyAdds > hot.Value.MultiplyAdds))
                hot = counts;
        }

        return new PtxStatistics(
            entry.Groups["name"].Value,
            shared,
            local,
            Count(instructions.Select(i => i.Text), uses),
            hot,
            loops.Count,
            Directive(ptx, MaxThreadsDirective()),
            Directive(ptx, MinGroupsDirective()));
    }

    private static int? Directive(string ptx, Regex pattern)
    {
        var match = pattern.Match(ptx);
        return match.Success ? int.Parse(match.Groups["value"].Value, System.Globalization.CultureInfo.InvariantCulture) : null;
    }

    private static string StripComment(string line)
    {
        var comment = line.IndexOf("//", StringComparison.Ordinal);
        return comment < 0 ? line : line[..comment];
    }

    private static long ElementBytes(string type) => type switch
    {
        "b8" or "u8" or "s8" => 1,
        "b16" or "u16" or "s16" or "f16" => 2,
        "b64" or "u64" or "s64" or "f64" => 8,
        _ => 4,
    };

    /// <summary>A loop: the lines from a label to the last branch back to it.</summary>
    private readonly record struct Loop(int Start, int End);

    private static List<Loop> FindLoops(IReadOnlyList<string> lines)
    {
        var labels = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < lines.Count; i++)
        {
            var label = Label().Match(lines[i]);
            if (label.Success)
                labels[label.Groups["name"].Value] = i;
        }
        var ends = new Dictionary<int, int>();
        for (var i = 0; i < lines.Count; i++)
        {
            var branch = Branch().Match(lines[i]);
            if (branch.Success && labels.TryGetValue(branch.Groups["target"].Value, out var start) && start < i)
                ends[start] = Math.Max(i, ends.GetValueOrDefault(start));
        }
        return ends.Select(e => new Loop(e.Key, e.Value)).OrderBy(l => l.Start).ToList();
    }

    /// <summary>How often each register is read (operands after the destination).</summary>
    private static Dictionary<string, int> RegisterUses(IEnumerable<string> instructions)
    {
        var uses = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var text in instructions)
        {
            var instruction = Instruction().Match(text);
            if (!instruction.Success)
                continue;
            var operands = instruction.Groups["operands"].Value;
            // Stores and branches read every operand; other instructions write their first.
            var opcode = instruction.Groups["opcode"].Value;
            var reads = opcode.StartsWith("st.", StringComparison.Ordinal) || opcode.StartsWith("bra", StringComparison.Ordinal)
                ? operands
                : operands[(DestinationEnd(operands) + 1)..];
            foreach (Match register in RegisterName().Matches(reads))
                uses[register.Value] = uses.GetValueOrDefault(register.Value) + 1;
        }
        return uses;
    }

    /// <summary>Index of the comma after the destination operand (a vector destination is a brace group); −1 when there is none.</summary>
    private static int DestinationEnd(string operands)
    {
        var start = operands.TrimStart().StartsWith('{') ? operands.IndexOf('}', StringComparison.Ordinal) : 0;
        return start < 0 ? -1 : operands.IndexOf(',', start);
    }

    private static PtxCounts Count(IEnumerable<string> instructions, IReadOnlyDictionary<string, int> uses)
    {
        var counts = default(PtxCounts);
        var products = new Dictionary<string, bool>(StringComparer.Ordinal); // mul.f32 destinations read once
        foreach (var text in instructions)
        {
            var instruction = Instruction().Match(text);
            if (!instruction.Success)
                continue;
            var opcode = instruction.Groups["opcode"].Value;
            var operands = instruction.Groups["operands"].Value;
            var parts = opcode.Split('.');
            switch (parts[0])
            {
                case "ld" or "ldu" or "st":
                {
                    var load = parts[0] != "st";
                    var width = parts.Contains("v4") ? 4 : parts.Contains("v2") ? 2 : 1;
                    if (parts.Contains("global"))
                        counts = load ? counts with { GlobalLoads = counts.GlobalLoads.Add(width) } : counts with { GlobalStores = counts.GlobalStores.Add(width) };
                    else if (parts.Contains("shared"))
                        counts = load ? counts with { SharedLoads = counts.SharedLoads.Add(width) } : counts with { SharedStores = counts.SharedStores.Add(width) };
                    else if (parts.Contains("local"))
                        counts = load ? counts with { LocalLoads = counts.LocalLoads + 1 } : counts with { LocalStores = counts.LocalStores + 1 };
                    break;
                }
                case "fma" when parts[^1] == "f32":
                    counts = counts with { Fma = counts.Fma + 1 };
                    break;
                case "mul" when parts[^1] == "f32":
                {
                    counts = counts with { Mul = counts.Mul + 1 };
                    var destination = RegisterName().Match(operands).Value;
                    if (uses.GetValueOrDefault(destination) == 1)
                        products[destination] = true;
                    break;
                }
                case "add" or "sub" when parts[^1] == "f32":
                {
                    counts = counts with { Add = counts.Add + 1 };
                    var sources = operands[(DestinationEnd(operands) + 1)..];
                    foreach (Match register in RegisterName().Matches(sources))
                    {
                        if (products.Remove(register.Value))
                        {
                            counts = counts with { MulAddPairs = counts.MulAddPairs + 1 };
                            break;
                        }
                    }
                    break;
                }
                case "bar" or "barrier" when parts.Length > 1 && parts[1] is "sync" or "red" or "arrive":
                    counts = counts with { Barriers = counts.Barriers + 1 };
                    break;
            }
        }
        return counts;
    }

    [GeneratedRegex(@"\.entry\s+(?<name>[A-Za-z_$][\w$]*)")]
    private static partial Regex EntryName();

    // .shared .align 16 .b8 name[4096];   .local .align 4 .b8 __local_depot0[288];
    [GeneratedRegex(@"^\s*\.(?<space>shared|local)\s+(?:\.align\s+\d+\s+)?\.(?<type>[a-z]\d+)\s+[\w$]+\[(?<count>\d+)\]")]
    private static partial Regex ArrayDeclaration();

    [GeneratedRegex(@"^\s*(?<name>[\w$]+):")]
    private static partial Regex Label();

    [GeneratedRegex(@"^\s*(?:@!?%\w+\s+)?bra(?:\.uni)?\s+(?<target>[\w$]+)\s*;")]
    private static partial Regex Branch();

    // An instruction: optional predicate, opcode with its suffixes, operands up to ';'.
    [GeneratedRegex(@"^(?:@!?%\w+\s+)?(?<opcode>[a-z][\w.]*)\s*(?<operands>[^;]*);")]
    private static partial Regex Instruction();

    [GeneratedRegex(@"%[A-Za-z_]\w*")]
    private static partial Regex RegisterName();

    [GeneratedRegex(@"\.maxntid\s+(?<value>\d+)")]
    private static partial Regex MaxThreadsDirective();

    [GeneratedRegex(@"\.minnctapersm\s+(?<value>\d+)")]
    private static partial Regex MinGroupsDirective();
}
