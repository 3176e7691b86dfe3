using System.Text;
using System.Text.Json.Nodes;
using Microsoft.ML.Tokenizers;

namespace GpuTransformer.Training.Tokenizers;

/// <summary>
/// BPE with OpenAI's cl100k_base merges (Microsoft.ML.Tokenizers' <see cref="TiktokenTokenizer"/>),
/// compacted to the pieces the training text uses, so the model's vocabulary stays small
/// (tens of thousands of ids rather than 100,277).
/// <para>
/// Ids: 0 <c>&lt;pad&gt;</c>, 1 <c>&lt;bos&gt;</c>, 2 <c>&lt;eos&gt;</c>, 3 <c>&lt;unk&gt;</c>, then the cl100k ids
/// seen in the training text, ascending: compact id 4 + i ↔ cl100k id <see cref="BaseIds"/>[i].
/// <see cref="Encode"/> runs cl100k and maps; a cl100k id never seen in training becomes <c>&lt;unk&gt;</c>
/// (so text round-trips exactly when all its pieces were seen). <see cref="Decode"/> maps back and runs
/// cl100k's decoder; <c>&lt;unk&gt;</c> decodes as the text "&lt;unk&gt;", <c>&lt;eos&gt;</c> as a newline.
/// cl100k's own special tokens (e.g. &lt;|endoftext|&gt;) are not recognised in the text.
/// </para>
/// </summary>
public sealed class CompactBpeTokenizer : ITokenizer
{
    /// <summary>The kind stored in a tokenizer's JSON.</summary>
    public const string KindName = "bpe-cl100k";

    /// <summary>The tiktoken encoding used.</summary>
    public const string EncodingName = "cl100k_base";

    private const int FirstPiece = 4;

    private static readonly SpecialTokenIds Ids = new(Pad: 0, Bos: 1, Eos: 2, Unk: 3);

    private static readonly Lazy<TiktokenTokenizer> Cl100k = new(
        () => TiktokenTokenizer.CreateForEncoding(EncodingName), LazyThreadSafetyMode.ExecutionAndPublication);

    private readonly int[] baseIds;
    private readonly Dictionary<int, int> compactOf;

    /// <summary>A tokenizer over the cl100k ids <paramref name="usedBaseIds"/> (strictly ascending).</summary>
    public CompactBpeTokenizer(IEnumerable<int> usedBaseIds)
    {
        ArgumentNullException.ThrowIfNull(usedBaseIds);
        baseIds = [.. usedBaseIds];
        compactOf = new Dictionary<int, int>(baseIds.Length);
        for (var i = 0; i < baseIds.Length; i++)
        {
            if (baseIds[i] < 0 || (i > 0 && baseIds[i] <= baseIds[i - 1]))
                throw new ArgumentException($"cl100k ids must be non-negative and strictly ascending (index {i}: {baseIds[i]}).", nameof(usedBaseIds));
            compactOf[baseIds[i]] = FirstPiece + i;
        }
    }

    /// <summary>Encodes <paramref name="trainingTexts"/> with cl100k and keeps the ids that occur.</summary>
    public static CompactBpeTokenizer Train(IEnumerable<string> trainingTexts)
    {
        ArgumentNullException.ThrowIfNull(trainingTexts);
        var used = new HashSet<int>();
        var gate = new Lock();
        Parallel.ForEach(trainingTexts, () => new HashSet<int>(), (text, _, local) =>
        {
            local.UnionWith(EncodeBase(text));
            return local;
        }, local =>
        {
            lock (gate)
                used.UnionWith(local);
        });
        return new CompactBpeTokenizer(used.Order());
    }

    /// <inheritdoc/>
    public string Name => KindName;

    /// <inheritdoc/>
    public int VocabularySize => FirstPiece + baseIds.Length;

    /// <inheritdoc/>
    public SpecialTokenIds Specials => Ids;

    /// <summary>The cl100k id of each compact piece: compact id 4 + i is cl100k id <c>BaseIds[i]</c>.</summary>
    public IReadOnlyList<int> BaseIds => baseIds;

    /// <inheritdoc/>
    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var pieces = EncodeBase(text);
        var ids = new int[pieces.Count];
        for (var i = 0; i < ids.Length; i++)
            ids[i] = compactOf.TryGetValue(pieces[i], out var id) ? id : Ids.Unk!.Value;
        return ids;
    }

    /// <inheritdoc/>
    public string Decode(ReadOnlySpan<int> ids)
    {
        var text = new StringBuilder();
        var run = new List<int>();
        void Flush()
        {
            if (run.Count > 0)
                text.Append(Cl100k.Value.Decode(run));
            run.Clear();
        }
        foreach (var id in ids)
        {
            TokenizerChecks.InRange(id, VocabularySize);
            if (id >= FirstPiece)
            {
                run.Add(baseIds[id - FirstPiece]);
                continue;
            }
            Flush();
            if (id == Ids.Unk)
                text.Append(TokenizerChecks.Unk);
            else if (id == Ids.Eos)
                text.Append('\n');
        }
        Flush();
        return text.ToString();
    }

    /// <inheritdoc/>
    public string TokenText(int id)
    {
        TokenizerChecks.InRange(id, VocabularySize);
        return id < FirstPiece ? TokenizerChecks.SpecialTexts[id] : Cl100k.Value.Decode([baseIds[id - FirstPiece]]) ?? "";
    }

    /// <inheritdoc/>
    public JsonObject ToJson() => new()
    {
        ["kind"] = KindName,
        ["version"] = 1,
        ["encoding"] = EncodingName,
        ["base_ids"] = new JsonArray([.. baseIds.Select(id => JsonValue.Create(id))]),
    };

    internal static CompactBpeTokenizer FromJson(JsonObject json)
    {
        var encoding = json["encoding"]?.GetValue<string>();
        if (encoding != EncodingName)
            throw new FormatException($"BPE tokenizer uses encoding '{encoding}'; only '{EncodingName}' is available.");
        return new CompactBpeTokenizer(TokenizerJson.Ints(json, "base_ids"));
    }

    private static IReadOnlyList<int> EncodeBase(string text) =>
        Cl100k.Value.EncodeToIds(text, considerPreTokenization: true, considerNormalization: true);
}
