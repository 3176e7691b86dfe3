using GpuTransformer.Kernels;

namespace GpuTransformer.Layers;

/// <summary>
/// What one encoder or decoder layer needs to know (a slice of <see cref="TransformerConfig"/> or
/// <see cref="LanguageModelConfig"/>, with the paper's names).
/// </summary>
/// <param name="DModel">E, the model width.</param>
/// <param name="Heads">H; divides E.</param>
/// <param name="DimFeedforward">d_ff.</param>
/// <param name="Activation">The feed-forward activation.</param>
/// <param name="Dropout">P_drop of every dropout in the layer.</param>
/// <param name="LayerNormEps">eps of the layer's norms.</param>
/// <param name="NormFirst">Pre-LN instead of post-LN.</param>
public sealed record LayerConfig(int DModel, int Heads, int DimFeedforward, Activation Activation, float Dropout, float LayerNormEps, bool NormFirst)
{
    /// <summary>The layers of an encoder–decoder model.</summary>
    public static LayerConfig From(TransformerConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        return new(config.DModel, config.NHead, config.DimFeedforward, config.ActivationKind, config.Dropout, config.LayerNormEps, config.NormFirst);
    }

    /// <summary>The layers of a decoder-only model.</summary>
    public static LayerConfig From(LanguageModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        return new(config.DModel, config.NHead, config.DimFeedforward, config.ActivationKind, config.Dropout, config.LayerNormEps, config.NormFirst);
    }
}
