namespace GpuTransformer.Tests.Training;

public sealed class BatcherTests
{
    // Distinct ids make every window identifiable by its first id.
    private static readonly int[] Stream = Enumerable.Range(0, 1000).ToArray();

    [Fact]
    public void Targets_are_the_inputs_shifted_by_one_inside_the_stream()
    {
        var batcher = new LanguageModelBatcher(Stream, batchSize: 7, contextLength: 33, seed: 5);
        for (var step = 0; step < 20; step++)
        {
            var batch = batcher.Next();
            Assert.Equal((7, 33), (batch.BatchSize, batch.ContextLength));
            for (var row = 0; row < 7; row++)
            {
                var start = batch.Starts[row];
                Assert.InRange(start, 0, Stream.Length - 33 - 1);
                Assert.Equal(Stream.AsSpan((int)start, 33).ToArray(), batch.Inputs.AsSpan(row * 33, 33).ToArray());
                Assert.Equal(Stream.AsSpan((int)start + 1, 33).ToArray(), batch.Targets.AsSpan(row * 33, 33).ToArray());
            }
        }
    }

    [Fact]
    public void Restored_state_gives_identical_next_batches()
    {
        var uninterrupted = new LanguageModelBatcher(Stream, 4, 16, seed: 42);
        var reference = Enumerable.Range(0, 12).Select(_ => uninterrupted.Next()).ToList();

        var first = new LanguageModelBatcher(Stream, 4, 16, seed: 42);
        for (var i = 0; i < 5; i++)
            first.Next();
        var saved = first.State;
        Assert.Equal(new BatcherState(42, 5, 4, 16, Stream.Length), saved);

        var resumed = new LanguageModelBatcher(Stream, 4, 16, seed: 42);
        resumed.Restore(saved);
        var reused = new LanguageModelBatch(4, 16);
        for (var i = 5; i < 12; i++)
        {
            resumed.NextInto(reused);
            Assert.Equal(reference[i].Inputs, reused.Inputs);
            Assert.Equal(reference[i].Targets, reused.Targets);
        }
        Assert.Equal(12, resumed.Step);

        // Batches differ from step to step and from seed to seed.
        Assert.NotEqual(reference[0].Starts, reference[1].Starts);
        Assert.NotEqual(reference[0].Starts, new LanguageModelBatcher(Stream, 4, 16, seed: 43).Next().Starts);
        Assert.Throws<ArgumentException>(() => new LanguageModelBatcher(Stream, 8, 16, seed: 42).Restore(saved));
    }

    [Fact]
    public void Window_starts_cover_the_stream_uniformly()
    {
        var batcher = new LanguageModelBatcher(Enumerable.Range(0, 11).ToArray(), batchSize: 50, contextLength: 6, seed: 1);
        var counts = new int[5];
        for (var i = 0; i < 200; i++)
        {
            foreach (var start in batcher.Next().Starts)
                counts[start]++;
        }
        // 10,000 draws over starts 0..4: each ≈ 2,000 (binomial sd ≈ 40).
        Assert.All(counts, c => Assert.InRange(c, 1800, 2200));
    }

    [Fact]
    public void Evaluation_pass_is_sequential_and_covers_every_full_window_once()
    {
        var stream = Enumerable.Range(0, 64).ToArray();
        var batches = EvaluationBatches.Sequential(stream, batchSize: 3, contextLength: 9).ToList();
        Assert.Equal(7, EvaluationBatches.WindowCount(64, 9));
        Assert.Equal([3, 3, 1], batches.Select(b => b.BatchSize));
        var starts = batches.SelectMany(b => b.Starts).ToArray();
        Assert.Equal(Enumerable.Range(0, 7).Select(i => (long)i * 9), starts);
        var targets = batches.SelectMany(b => b.Targets).ToArray();
        Assert.Equal(Enumerable.Range(1, 63), targets);
        Assert.Single(EvaluationBatches.Sequential(stream, 3, 9, maxBatches: 1));
    }

    [Fact]
    public void Too_short_streams_and_bad_shapes_are_rejected()
    {
        Assert.Throws<ArgumentException>(() => new LanguageModelBatcher(new int[16], 2, 16, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new LanguageModelBatcher(new int[99], 0, 16, 0));
        Assert.Throws<ArgumentException>(() => new LanguageModelBatcher(new int[99], 2, 16, 0).NextInto(new LanguageModelBatch(2, 15)));
    }

    [Fact]
    public void Seq2seq_batch_shifts_targets_and_pads_with_masks()
    {
        const int pad = 0, bos = 1, eos = 2;
        var batch = Seq2SeqBatch.Create([new SequencePair([5, 6, 7], [8, 9]), new SequencePair([5], [10, 11, 12])], pad, bos, eos);
        Assert.Equal((2, 3, 4), (batch.BatchSize, batch.SourceLength, batch.TargetLength));
        Assert.Equal([5, 6, 7, 5, pad, pad], batch.Source);
        Assert.Equal([1f, 1, 1, 1, 0, 0], batch.SourceMask);
        Assert.Equal([bos, 8, 9, pad, bos, 10, 11, 12], batch.TargetInput);
        Assert.Equal([8, 9, eos, pad, 10, 11, 12, eos], batch.TargetOutput);
        Assert.Equal([1f, 1, 1, 0, 1, 1, 1, 1], batch.TargetMask);
        Assert.Equal([3, 1], batch.SourceLengths);
        Assert.Equal(7, batch.TargetTokenCount);

        var cut = Seq2SeqBatch.Create([new SequencePair([5, 6, 7], [8, 9, 10])], pad, bos, eos, maxSourceLength: 2, maxTargetLength: 3);
        Assert.Equal([5, 6], cut.Source);
        Assert.Equal([bos, 8, 9], cut.TargetInput);
        Assert.Equal([8, 9, eos], cut.TargetOutput);
        Assert.Throws<ArgumentException>(() => Seq2SeqBatch.Create([new SequencePair([5, pad], [8])], pad, bos, eos));
    }
}
