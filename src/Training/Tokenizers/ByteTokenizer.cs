using System.Text;
using System.Text.Json.Nodes;

namespace GpuTransformer.Training.Tokenizers;

/// <summary>
/// Byte-level: ids 0–255 are the UTF-8 bytes of the text, 256 <c>&lt;pad&gt;</c>,
/// 257 <c>&lt;bos&gt;</c>, 258 <c>&lt;eos&gt;</c>; 259 ids. Every text round-trips exactly; there
/// is no <c>&lt;unk&gt;</c>. <see cref="Decode"/> drops all specials and decodes the bytes as UTF-8
/// (an incomplete sequence, e.g. a generated prefix cut mid-character, becomes U+FFFD).
/// </summary>
public sealed class ByteTokenizer : ITokenizer
{
    /// <summary>The kind stored in a tokenizer's JSON.</summary>
    public const string KindName = "byte";

    private static readonly SpecialTokenIds Ids = new(Pad: 256, Bos: 257, Eos: 258, Unk: null);

    /// <inheritdoc/>
    public string Name => KindName;

    /// <inheritdoc/>
    public int VocabularySize => 259;

    /// <inheritdoc/>
    public SpecialTokenIds Specials => Ids;

    /// <inheritdoc/>
    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var bytes = Encoding.UTF8.GetBytes(text);
        var ids = new int[bytes.Length];
        for (var i = 0; i < bytes.Length; i++)
            ids[i] = bytes[i];
        return ids;
    }

    /// <inheritdoc/>
    public string Decode(ReadOnlySpan<int> ids)
    {
        var bytes = new List<byte>(ids.Length);
        foreach (var id in ids)
        {
            TokenizerChecks.InRange(id, VocabularySize);
            if (id < 256)
                bytes.Add((byte)id);
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    /// <inheritdoc/>
    public string TokenText(int id)
    {
        TokenizerChecks.InRange(id, VocabularySize);
        return id switch
        {
            256 => "<pad>",
            257 => "<bos>",
            258 => "<eos>",
            < 128 => ((char)id).ToString(),
            _ => $"<0x{id:X2}>",
        };
    }

    /// <inheritdoc/>
    public JsonObject ToJson() => new() { ["kind"] = KindName, ["version"] = 1 };
}
