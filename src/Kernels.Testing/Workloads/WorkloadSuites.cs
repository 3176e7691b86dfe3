namespace GpuTransformer.Kernels.Workloads;

/// <summary>Ready-made lists of workloads.</summary>
public static class WorkloadSuites
{
    /// <summary>
    /// One small problem per kernel family (and per direction where there is a backward), for
    /// the <c>demo</c> command: quick to check against the C# references. With
    /// <paramref name="simulator"/> the shapes shrink to what ILGPU's CPU simulator runs in
    /// seconds (≤ 64 per dimension, not multiples of the tiles).
    /// </summary>
    public static IReadOnlyList<WorkloadSpec> Demo(bool simulator) => simulator
        ?
        [
            MatmulSpec.Square(48),
            MatmulSpec.Square(48, naive: true),
            new MatmulSpec(MatmulLayout.NT, 33, 40, 24),
            new MatmulSpec(MatmulLayout.TN, 40, 33, 24),
            new AttentionSpec(1, 2, 33, 16, Causal: true),
            new AttentionSpec(1, 2, 33, 16, Causal: true, Backward: true),
            new AttentionSpec(1, 2, 33, 16, Causal: true, Backward: true, Unfused: true),
            new SoftmaxSpec(63, 33),
            new SoftmaxSpec(63, 33, Backward: true),
            new LayerNormSpec(63, 48),
            new LayerNormSpec(63, 48, Backward: true),
            new CrossEntropySpec(33, 61),
            new ActivationSpec(1000),
            new ActivationSpec(1000, Backward: true),
            new EmbeddingSpec(64, 16, 50, 32),
            new EmbeddingSpec(64, 16, 50, 32, Backward: true),
            new PositionalEncodingSpec(2, 16, 32),
            new DropoutSpec(1000),
            new AdamWSpec(1000),
            new GlobalNormSpec(1000),
            new ElementwiseAddSpec(1000),
        ]
        :
        [
            MatmulSpec.Square(256),
            MatmulSpec.Square(256, naive: true),
            new MatmulSpec(MatmulLayout.NT, 256, 250, 200),
            new MatmulSpec(MatmulLayout.TN, 250, 256, 200),
            new AttentionSpec(1, 4, 128, 64, Causal: true),
            new AttentionSpec(1, 4, 128, 64, Causal: true, Backward: true),
            new AttentionSpec(1, 4, 128, 64, Causal: true, Backward: true, Unfused: true),
            new SoftmaxSpec(512, 500),
            new SoftmaxSpec(512, 500, Backward: true),
            new LayerNormSpec(512, 512),
            new LayerNormSpec(512, 512, Backward: true),
            new CrossEntropySpec(256, 2000),
            new ActivationSpec(1 << 18),
            new ActivationSpec(1 << 18, Backward: true),
            new EmbeddingSpec(2048, 128, 1000, 256),
            new EmbeddingSpec(2048, 128, 1000, 256, Backward: true),
            new PositionalEncodingSpec(16, 128, 256),
            new DropoutSpec(1 << 18),
            new AdamWSpec(1 << 20),
            new GlobalNormSpec(1 << 20),
            new ElementwiseAddSpec(1 << 18),
        ];
}
