using GpuTransformer.Training.Distributed;
using System.Diagnostics.CodeAnalysis;

namespace GpuTransformer.Tests.Distributed;

/// <summary>
/// <see cref="DataParallel"/> and <see cref="GradientReducer"/> in one process, against a
/// communicator that plays rank r of R identical ranks (every rank holds what this one holds):
/// bucketing, the rank's share of the stream, the gathered loss, the rules on the global batch.
/// The real multi-process runs are <see cref="DataParallelJobTests"/>.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class DataParallelTests(Devices devices)
{
    /// <summary>Rank <paramref name="rank"/> of <paramref name="size"/> ranks that all hold this rank's buffers: a sum is size × the value.</summary>
    private sealed class MirrorCommunicator(int rank, int size) : ICommunicator
    {
        public int Rank => rank;

        public int Size => size;

        public string Description => $"mirror, rank {rank} of {size}";

        public int Reductions { get; private set; }

        public void AllReduceSum(Span<float> values)
        {
            Reductions++;
            foreach (ref var v in values)
                v *= size;
        }

        public void AllReduceSum(ArrayView<float> values, ComputeDevice device)
        {
            var host = new float[values.Length];
            values.CopyToCPU(device.Stream, host);
            AllReduceSum(host);
            values.CopyFromCPU(device.Stream, host);
        }

        public void Broadcast<T>(Span<T> values, int root)
            where T : unmanaged
        {
        }

        public void Broadcast(ArrayView<float> values, int root, ComputeDevice device)
        {
        }

        public void AllGather<T>(ReadOnlySpan<T> mine, Span<T> all)
            where T : unmanaged
        {
            for (var r = 0; r < size; r++)
                mine.CopyTo(all[(r * mine.Length)..]);
        }

        public void Barrier()
        {
        }

        [DoesNotReturn]
        public void Abort(string reason) => throw new InvalidOperationException(reason);

        public void Dispose()
        {
        }
    }

    private ComputeDevice Device => devices.Get(Devices.Available.Contains("opencl") ? "opencl" : "cpu");

    [Fact]
    public void TheReducerSumsEveryGradientOnceThroughSeveralBuckets()
    {
        var (model, _) = TinyRun.Create(Device);
        using (model)
        {
            // A model's parameters are one pack: the buckets are ranges of its gradient buffer, reduced in place.
            var parameters = model.Parameters().ToList();
            AssertReducedOnceEach(parameters, inPlace: true, floats: model.PackParameters().Length, bucketFloats: 700);
        }

        // Parameters in their own buffers: packed into bucket buffers and back.
        using var first = new Linear(Device, 20, 30, bias: true, new ParameterInitializer(1));
        using var norm = new LayerNorm(Device, 30);
        using var second = new Linear(Device, 30, 7, bias: false, new ParameterInitializer(2));
        var own = first.Parameters().Concat(norm.Parameters()).Concat(second.Parameters()).ToList();
        AssertReducedOnceEach(own, inPlace: false, floats: own.Sum(p => (long)p.Gradient.Length), bucketFloats: 100);
    }

    private static void AssertReducedOnceEach(List<Parameter> parameters, bool inPlace, long floats, int bucketFloats)
    {
        var random = new Random(5);
        foreach (var p in parameters)
            p.Gradient.CopyFrom(Enumerable.Range(0, p.Gradient.Length).Select(_ => (float)random.NextDouble() - 0.5f).ToArray());
        var before = parameters.Select(p => p.Gradient.ToArray()).ToList();
        var mirror = new MirrorCommunicator(0, 3);
        using var reducer = new GradientReducer(mirror, parameters, bucketFloats);

        reducer.AllReduce();

        Assert.Equal(inPlace, reducer.InPlace);
        Assert.True(reducer.BucketCount > 2, $"{reducer.BucketCount} buckets: the test needs several");
        Assert.Equal(reducer.BucketCount, mirror.Reductions);
        Assert.Equal(floats, reducer.Floats);
        for (var i = 0; i < parameters.Count; i++)
            Assert.Equal(before[i].Select(v => v * 3), parameters[i].Gradient.ToArray()); // ×3 is exact in binary: each element reduced once
    }

    [Fact]
    public void RankOneTrainsItsShareAndLeavesTheStreamWhereOneProcessWould()
    {
        var (model, task) = TinyRun.Create(Device, dropout: 0.1f);
        using (model)
        {
            task.NextMicroBatch = 8; // step 2 of a run with 4 micro-batches per step
            var start = model.RandomState;
            using var parallel = new DataParallel(new MirrorCommunicator(1, 2), task, TinyRun.Options(10) with { Accumulate = 4 });
            Assert.Equal(2, parallel.MicroBatchesPerRank);
            Assert.False(parallel.IsRoot);

            parallel.BeginStep();
            parallel.BeginMicroBatch(1); // rank 1's second: micro-batch 3 of the step
            Assert.Equal(8 + 3, task.NextMicroBatch);
            Assert.Equal(start.Offset + (3 * DataParallel.DropoutStride), model.RandomState.Offset);
            model.ZeroGradients();
            var micro = task.TrainMicroBatch(0.25f);
            var (lossSum, tokens) = parallel.EndMicroBatches([1.5, micro.Loss], micro.Tokens);

            Assert.Equal((1.5 + micro.Loss) * 2, lossSum); // the mirror's other rank holds the same two losses
            Assert.Equal(2 * micro.Tokens, tokens);
            Assert.Equal(8 + 4, task.NextMicroBatch);
            Assert.Equal(start with { Offset = start.Offset + (4 * DataParallel.DropoutStride) }, model.RandomState);
        }
    }

    [Theory]
    [InlineData(3, 1, 2, "3 ranks but a global batch of 2 sequences (2 micro-batch(es) per step): more ranks than sequences. Use at most 2 ranks, or raise --accumulate to a multiple of 3.")]
    [InlineData(2, 2, 3, "a step's 3 micro-batches (--accumulate) do not divide between 2 ranks; use a multiple of 2")]
    public void AGlobalBatchThatDoesNotSplitBetweenTheRanksIsRefused(int ranks, int batch, int accumulate, string message)
    {
        var (model, task) = TinyRun.Create(Device, batch: batch);
        using (model)
        {
            var e = Assert.Throws<ArgumentException>(() => new DataParallel(new MirrorCommunicator(0, ranks), task, TinyRun.Options(10) with { Accumulate = accumulate }));
            Assert.Contains(message, e.Message);
        }
    }

    [Fact]
    public void ACheckpointKnowsItsRankCountAndAnotherIsRefused()
    {
        using var folder = new TempFolder();
        var path = Path.Combine(folder.Path, Checkpoint.FileName);
        var (model, task) = TinyRun.Create(Device);
        using (model)
        {
            using var trainer = new Trainer(task, TinyRun.Options(1, path));
            trainer.SaveCheckpoint(path);
        }
        var checkpoint = Checkpoint.Read(path);
        Assert.Equal(1, checkpoint.Ranks);
        DataParallel.RequireSameRanks(checkpoint, 1);
        var e = Assert.Throws<InvalidDataException>(() => DataParallel.RequireSameRanks(checkpoint, 4));
        Assert.Contains("was written by a run on 1 rank(s); this one has 4. Resume with the same number of ranks (mpirun -np 1, or without mpirun)", e.Message);
    }
}
