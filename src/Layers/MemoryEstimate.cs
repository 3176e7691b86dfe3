namespace GpuTransformer.Layers;

/// <summary>
/// Device bytes a model needs for one training step at a given batch shape, predicted from its
/// config by mirroring the buffers every layer allocates (so a trainer can refuse a config that
/// does not fit before allocating anything). <see cref="Module.DeviceBytes"/> measures the
/// first three terms after a step; the tests hold the two together.
/// </summary>
/// <param name="Parameters">Weights (float32).</param>
/// <param name="Gradients">One gradient per weight (allocated with the weight).</param>
/// <param name="Activations">The layers' forward and backward buffers at this shape (including the logits, whose gradient overwrites them).</param>
/// <param name="OptimizerState">AdamW's two moments per weight (held by the optimizer, not the model).</param>
/// <param name="Scratch">Outside the modules' buffers: the token buckets of the embeddings and the bias-gradient column-sum scratch of the reduction kernels.</param>
public sealed record MemoryEstimate(long Parameters, long Gradients, long Activations, long OptimizerState, long Scratch)
{
    /// <summary>Everything.</summary>
    public long Total => Parameters + Gradients + Activations + OptimizerState + Scratch;

    /// <summary>The part <see cref="Module.DeviceBytes"/> counts: parameters, gradients and activation buffers.</summary>
    public long ModuleBytes => Parameters + Gradients + Activations;

    /// <summary>
    /// A decoder-only model at [B, T]. <paramref name="training"/>: forward and backward buffers
    /// and active dropout; otherwise forward buffers only. Assumes a padded batch (a [B, T] mask).
    /// </summary>
    public static MemoryEstimate For(LanguageModelConfig config, int batch, int length, bool training = true)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        var (e, f, v) = ((long)config.DModel, (long)config.DimFeedforward, (long)config.VocabularySize);
        var layer = (4 * e * e) + (4 * e) + (2 * e * f) + f + e + (4 * e);
        var parameters = (v * e) + (config.NumLayers * layer) + (2 * e) + (config.TieWeights ? 0 : v * e);

        var sizes = new Sizes(batch, config.NHead, e, f, training, training && config.Dropout > 0);
        var n = (long)batch * length;
        var floats = sizes.Embedding(n) + sizes.Dropout(n, e)
            + (config.NumLayers * sizes.EncoderLayer(n, length))
            + sizes.LayerNorm(n, e) + sizes.Linear(n, e, v) + sizes.Loss(n);
        var ints = n /* key padding */ + n /* loss targets */;
        var scratch = TokenBuckets(n) + (4 * ColumnSumScratch(n, Math.Max(3 * e, f)));
        return Build(parameters, floats, ints, scratch);
    }

    /// <summary>
    /// An encoder–decoder model at source [B, S] and target [B, T]. <paramref name="training"/> as
    /// for the language model. Assumes padded batches.
    /// </summary>
    public static MemoryEstimate For(TransformerConfig config, int batch, int sourceLength, int targetLength, bool training = true)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        var (e, f) = ((long)config.DModel, (long)config.DimFeedforward);
        var (vs, vt) = ((long)config.SourceVocabularySize, (long)config.TargetVocabularySize);
        var attention = (4 * e * e) + (4 * e);
        var feedForward = (2 * e * f) + f + e;
        var parameters = (vs * e) + (config.ShareEmbeddings ? 0 : 2 * vt * e) + vt
            + (config.NumEncoderLayers * (attention + feedForward + (4 * e))) + (2 * e)
            + (config.NumDecoderLayers * ((2 * attention) + feedForward + (6 * e))) + (2 * e);

        var sizes = new Sizes(batch, config.NHead, e, f, training, training && config.Dropout > 0);
        var (m, n) = ((long)batch * sourceLength, (long)batch * targetLength);
        var encoder = (config.NumEncoderLayers * sizes.EncoderLayer(m, sourceLength)) + sizes.LayerNorm(m, e);
        var decoder = (config.NumDecoderLayers * sizes.DecoderLayer(n, targetLength, m)) + sizes.LayerNorm(n, e)
            + (training ? m * e : 0);
        var floats = sizes.Embedding(m) + sizes.Dropout(m, e) + encoder
            + sizes.Embedding(n) + sizes.Dropout(n, e) + decoder
            + sizes.Linear(n, e, vt) + sizes.Loss(n);
        var ints = m + n /* key padding */ + n /* loss targets */;
        var scratch = TokenBuckets(m) + TokenBuckets(n)
            + (4 * Math.Max(ColumnSumScratch(n, Math.Max(Math.Max(3 * e, f), vt)), ColumnSumScratch(m, Math.Max(3 * e, f))));
        return Build(parameters, floats, ints, scratch);
    }

    private static MemoryEstimate Build(long parameters, long activationFloats, long activationInts, long scratch) =>
        new(4 * parameters, 4 * parameters, (4 * activationFloats) + (4 * activationInts), 8 * parameters, scratch);

    /// <summary>Bytes of the ids and CSR buckets of one embedding lookup of n tokens.</summary>
    private static long TokenBuckets(long n) => 4 * ((4 * n) + 1);

    /// <summary>Floats of the column-sum scratch for the bias gradient of [rows, columns].</summary>
    private static long ColumnSumScratch(long rows, long columns)
    {
        if (rows <= 16)
            return 0;
        var first = (rows + 15) / 16;
        return (first + ((first + 15) / 16)) * columns;
    }

    /// <summary>Floats of each layer's buffers at n rows (mirrors the layers' Resize calls).</summary>
    private sealed record Sizes(int Batch, int Heads, long E, long F, bool Backward, bool DropoutActive)
    {
        private long Grad(long floats) => Backward ? floats : 0;

        public long Linear(long n, long inFeatures, long outFeatures) => (n * outFeatures) + Grad(n * inFeatures);

        public long LayerNorm(long n, long c) => (n * c) + (2 * n) + Grad((n * c) + (2 * c * ((n + 31) / 32)));

        public long Dropout(long n, long c) => DropoutActive ? (n * c) + Grad(n * c) : 0;

        public long Embedding(long n) => 2 * n * E; // lookup, then the positional encoding's sum

        public long Loss(long n) => n + 1;         // per-row losses and the mean

        public long FeedForward(long n) => Linear(n, E, F) + (n * F) + Dropout(n, F) + Grad(n * F) + Linear(n, F, E);

        public long Sublayer(long n) => (n * E) + Grad(n * E) + Dropout(n, E);

        /// <summary>qkv, context, log-sum-exp (+ dqkv, dx, row-dot scratch) and the output projection.</summary>
        public long SelfAttention(long n, long length) =>
            (n * 3 * E) + (n * E) + (Batch * Heads * length) + Grad((n * 3 * E) + (n * E) + (Batch * Heads * length)) + Linear(n, E, E);

        /// <summary>q, projected memory k | v, context, log-sum-exp (+ their gradients, dQuery, dMemory) and the output projection.</summary>
        public long CrossAttention(long n, long length, long m) =>
            (n * E) + (m * 2 * E) + (n * E) + (Batch * Heads * length)
            + Grad((n * E) + (m * 2 * E) + (n * E) + (m * E) + (Batch * Heads * length)) + Linear(n, E, E);

        public long EncoderLayer(long n, long length) =>
            SelfAttention(n, length) + FeedForward(n) + (2 * LayerNorm(n, E)) + (2 * Sublayer(n));

        public long DecoderLayer(long n, long length, long m) =>
            SelfAttention(n, length) + CrossAttention(n, length, m) + FeedForward(n) + (3 * LayerNorm(n, E)) + (3 * Sublayer(n));
    }
}
