namespace GpuTransformer.Training.Tokenizers;

internal static class TokenizerChecks
{
    public const string Pad = "<pad>";
    public const string Bos = "<bos>";
    public const string Eos = "<eos>";
    public const string Unk = "<unk>";

    /// <summary>The special tokens in id order 0–3, as word and BPE tokenizers lay them out.</summary>
    public static readonly string[] SpecialTexts = [Pad, Bos, Eos, Unk];

    public static void InRange(int id, int vocabularySize)
    {
        if ((uint)id >= (uint)vocabularySize)
            throw new ArgumentOutOfRangeException(nameof(id), id, $"Token id {id} is outside the vocabulary [0, {vocabularySize}).");
    }
}
