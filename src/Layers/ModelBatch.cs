namespace GpuTransformer.Layers;

/// <summary>
/// One batch as a model trains on it or scores it (<see cref="IModel"/>). Decoder-only language
/// model: <see cref="Inputs"/> are the ids [B, T], <see cref="Targets"/> the next tokens [B, T].
/// Encoder–decoder: <see cref="Source"/> [B, S] is encoded, <see cref="Inputs"/> is the target
/// input [B, T] (shifted right) and <see cref="Targets"/> the target output [B, T].
/// </summary>
/// <param name="Inputs">The ids the (decoder) stream reads. // [B, T]</param>
/// <param name="Targets">What each position should predict; pad_id is ignored. // [B, T]</param>
public sealed record ModelBatch(TokenIds Inputs, TokenIds Targets)
{
    /// <summary>The encoder's ids (encoder–decoder only; null for a language model). // [B, S]</summary>
    public TokenIds? Source { get; init; }

    /// <summary>Key padding of <see cref="Inputs"/> (nonzero = padded); empty: the ids equal to pad_id. // [B, T]</summary>
    public ReadOnlyMemory<int> InputPadding { get; init; }

    /// <summary>Key padding of <see cref="Source"/>; empty: the ids equal to pad_id. // [B, S]</summary>
    public ReadOnlyMemory<int> SourcePadding { get; init; }
}
