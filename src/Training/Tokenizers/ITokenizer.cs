using System.Text.Json.Nodes;

namespace GpuTransformer.Training.Tokenizers;

/// <summary>Ids of the special tokens. <c>&lt;pad&gt;</c>, <c>&lt;bos&gt;</c> and <c>&lt;eos&gt;</c> exist in every tokenizer; <c>&lt;unk&gt;</c> only where text can fall outside the vocabulary (word, BPE).</summary>
public readonly record struct SpecialTokenIds(int Pad, int Bos, int Eos, int? Unk)
{
    /// <summary>Is <paramref name="id"/> one of the special ids?</summary>
    public bool IsSpecial(int id) => id == Pad || id == Bos || id == Eos || id == Unk;
}

/// <summary>
/// Text ↔ token ids. Implementations are immutable after construction, so one instance may
/// be shared across threads. <see cref="ToJson"/> is a complete description: a checkpoint
/// stores it and <see cref="TokenizerFactory.FromJson"/> rebuilds the same tokenizer.
/// </summary>
public interface ITokenizer
{
    /// <summary>Stable kind name: <c>byte</c>, <c>word</c> or <c>bpe-cl100k</c> (<see cref="TokenizerFactory.Kinds"/>).</summary>
    string Name { get; }

    /// <summary>Number of ids: every id is in [0, VocabularySize).</summary>
    int VocabularySize { get; }

    /// <summary>The special ids.</summary>
    SpecialTokenIds Specials { get; }

    /// <summary>The ids of <paramref name="text"/>. Never emits <c>&lt;pad&gt;</c> or <c>&lt;bos&gt;</c>; see each tokenizer for <c>&lt;eos&gt;</c>/<c>&lt;unk&gt;</c>.</summary>
    int[] Encode(string text);

    /// <summary>The text of <paramref name="ids"/>; <c>&lt;pad&gt;</c> and <c>&lt;bos&gt;</c> are dropped.</summary>
    /// <exception cref="ArgumentOutOfRangeException">An id outside [0, VocabularySize).</exception>
    string Decode(ReadOnlySpan<int> ids);

    /// <summary>The text of one token as it stands in the vocabulary (for labels and listings; may be a partial UTF-8 sequence shown as U+FFFD).</summary>
    string TokenText(int id);

    /// <summary>The full description: <c>{"kind": Name, "version": 1, …}</c>, written in a fixed property order so equal tokenizers give equal text.</summary>
    JsonObject ToJson();
}
