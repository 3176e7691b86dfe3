using System.Globalization;
using GpuTransformer.Layers;

namespace GpuTransformer.Training.Distributed;

/// <summary>Options of <see cref="DataParallel"/>.</summary>
public sealed record DataParallelOptions
{
    /// <summary>Floats per gradient bucket (default 4M, 16 MiB: PyTorch DDP's 25 MB order of size).</summary>
    public int BucketFloats { get; init; } = 1 << 22;
}

/// <summary>
/// Data parallelism for <see cref="Trainer"/>: R ranks train one model together, and one
/// optimizer step is the step a single process would take with the same
/// <see cref="TrainerOptions.Accumulate"/> = k micro-batches.
/// <para>
/// Per step: the global batch is micro-batches s·k … s·k + k − 1 of the task's numbered stream
/// (<see cref="IShardableTrainingTask"/>), the ones one process draws at step s; rank r trains
/// the k/R consecutive ones from s·k + r·k/R, each backward scaled by 1/k as in one process. Then
/// <see cref="GradientReducer"/> sums the gradients over the ranks (in rank order with MPI), so
/// every rank holds the step's mean gradient and AdamW — global-norm clipping included — takes the
/// same step on every rank from the same state. The micro-batch losses and token counts are
/// gathered and added in micro-batch order: the loss reported is the global mean, bitwise the one
/// process's. Afterwards the data position is s·k + k on every rank, as in one process, so
/// checkpoints hold the single-process position.
/// </para>
/// <para>
/// Dropout: with R &gt; 1 micro-batch m of a step draws its masks from the model's stream at offset
/// base + m·<see cref="DropoutStride"/> (base: the offset at the start of the step; the step ends at
/// base + k·stride), so ranks draw disjoint masks and a resumed run draws the same ones. A single
/// process draws its micro-batches one after another instead: with dropout the masks — not the
/// arithmetic — differ from a single-process run.
/// </para>
/// <para>
/// Decisions are rank 0's: the time limit and a stop request are broadcast from it each step; it
/// alone writes checkpoints (the others wait for its verdict on the state). Every rank evaluates
/// (the weights are the same everywhere, so the results are).
/// </para>
/// </summary>
public sealed class DataParallel : IDisposable
{
    /// <summary>Dropout counters reserved per micro-batch when R &gt; 1 (2³⁶: more than any micro-batch of a model that fits a device draws).</summary>
    internal const ulong DropoutStride = 1UL << 36;

    private readonly IShardableTrainingTask task;
    private readonly GradientReducer reducer;
    private readonly int accumulate;
    private long stepStart;
    private DropoutState dropoutStart;

    /// <summary>
    /// Joins <paramref name="task"/> to the job. Every rank calls it, before training, with its own
    /// task and the same options; it checks that the ranks agree (model config, trainer options,
    /// data and tokenizer, parameter count) and that the global batch divides between them, then
    /// makes the gradient buckets.
    /// </summary>
    /// <exception cref="CommunicatorException">The ranks disagree (on every rank, naming what differs).</exception>
    /// <exception cref="ArgumentException">The task cannot be sharded, or the global batch cannot be split over the ranks (on every rank).</exception>
    public DataParallel(ICommunicator communicator, ITrainingTask task, TrainerOptions options, DataParallelOptions? parallelOptions = null)
    {
        ArgumentNullException.ThrowIfNull(communicator);
        ArgumentNullException.ThrowIfNull(task);
        ArgumentNullException.ThrowIfNull(options);
        parallelOptions ??= new DataParallelOptions();
        Communicator = communicator;
        var model = task.Model;
        var metadata = task.Metadata().OrderBy(e => e.Key, StringComparer.Ordinal).ToList();
        communicator.RequireSameOnAllRanks("the model config", model.Config.ToJson());
        communicator.RequireSameOnAllRanks("the training options (steps, accumulation, intervals, optimizer, schedule)", options.ToJson().ToJsonString());
        communicator.RequireSameOnAllRanks("whether checkpoints are written (a checkpoint path set)", options.CheckpointPath is null ? 0 : 1);
        communicator.RequireSameOnAllRanks("the task's checkpoint entries", string.Join(',', metadata.Select(e => e.Key)));
        foreach (var (key, value) in metadata)
            communicator.RequireSameOnAllRanks(key == Checkpoint.CorpusKey ? "the corpus (name, split, files, token counts)" : $"the task's '{key}'", value);
        var parameters = model.Parameters().ToList();
        communicator.RequireSameOnAllRanks("the parameter count", parameters.Sum(p => (long)p.Value.Length));

        var ranks = communicator.Size;
        if (ranks > 1 && task is not IShardableTrainingTask)
            throw new ArgumentException($"rank {communicator.Rank}/{ranks}: the task {task.GetType().Name} cannot be split between ranks (it does not number its micro-batches); train it in one process.", nameof(task));
        var sequences = (long)options.Accumulate * ((task as IShardableTrainingTask)?.SequencesPerMicroBatch ?? 1);
        if (ranks > sequences)
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture,
                $"rank {communicator.Rank}/{ranks}: {ranks} ranks but a global batch of {sequences} sequences ({options.Accumulate} micro-batch(es) per step): more ranks than sequences. Use at most {sequences} ranks, or raise --accumulate to a multiple of {ranks}."),
                nameof(communicator));
        if (options.Accumulate % ranks != 0)
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture,
                $"rank {communicator.Rank}/{ranks}: a step's {options.Accumulate} micro-batches (--accumulate) do not divide between {ranks} ranks; use a multiple of {ranks} (each rank trains accumulate/ranks of them)."),
                nameof(options));
        this.task = (task as IShardableTrainingTask)!;
        accumulate = options.Accumulate;
        MicroBatchesPerRank = accumulate / ranks;
        reducer = new GradientReducer(communicator, parameters, parallelOptions.BucketFloats);
    }

    /// <summary>The job.</summary>
    public ICommunicator Communicator { get; }

    /// <summary>Whether this rank writes checkpoints, metrics and progress (rank 0).</summary>
    public bool IsRoot => Communicator.Rank == 0;

    /// <summary>Micro-batches this rank trains per step: accumulate / ranks.</summary>
    public int MicroBatchesPerRank { get; }

    /// <summary>Gradient buckets, i.e. all-reduce calls per step.</summary>
    public int BucketCount => reducer.BucketCount;

    /// <summary>Refuses a checkpoint written by another number of ranks: its data position and dropout offsets are laid out for that number.</summary>
    /// <exception cref="InvalidDataException">The rank counts differ (the message says how to continue).</exception>
    internal static void RequireSameRanks(CheckpointFile checkpoint, int ranks)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        if (checkpoint.Ranks != ranks)
        {
            var c = CultureInfo.InvariantCulture;
            throw new InvalidDataException(
                string.Create(c, $"Checkpoint '{checkpoint.Path}' was written by a run on {checkpoint.Ranks} rank(s); this one has {ranks}. ") +
                string.Create(c, $"Resume with the same number of ranks (mpirun -np {checkpoint.Ranks}{(checkpoint.Ranks == 1 ? ", or without mpirun" : "")}): ") +
                "the ranks' shares of each batch and their dropout streams depend on it.");
        }
    }

    /// <summary>Copies rank 0's weights to every rank (they start equal from the same seed or checkpoint; this makes sure).</summary>
    internal void BroadcastParameters()
    {
        foreach (var p in task.Model.Parameters())
            Communicator.Broadcast(p.Value.View, 0, p.Value.Device);
    }

    /// <summary>Notes where the step starts in the data and dropout streams (the same on every rank).</summary>
    internal void BeginStep()
    {
        stepStart = task.NextMicroBatch;
        dropoutStart = task.Model.RandomState;
    }

    /// <summary>Moves the data and dropout streams to this rank's micro-batch <paramref name="index"/> (0 ≤ index &lt; <see cref="MicroBatchesPerRank"/>).</summary>
    internal void BeginMicroBatch(int index)
    {
        var m = ((long)Communicator.Rank * MicroBatchesPerRank) + index;
        task.NextMicroBatch = stepStart + m;
        if (Communicator.Size > 1)
            task.Model.RandomState = dropoutStart with { Offset = dropoutStart.Offset + ((ulong)m * DropoutStride) };
    }

    /// <summary>
    /// Ends the step's micro-batches: sums the gradients over the ranks, gathers every micro-batch's
    /// loss and tokens, and moves the streams to the end of the step. Returns the sum of all k
    /// losses in micro-batch order and the step's tokens, the same on every rank.
    /// </summary>
    /// <param name="losses">This rank's micro-batch losses, in order.</param>
    /// <param name="tokens">This rank's target tokens.</param>
    internal (double LossSum, long Tokens) EndMicroBatches(ReadOnlySpan<double> losses, long tokens)
    {
        if (losses.Length != MicroBatchesPerRank)
            throw new ArgumentException($"Got {losses.Length} losses for {MicroBatchesPerRank} micro-batches per rank.", nameof(losses));
        reducer.AllReduce();
        var per = MicroBatchesPerRank + 1;
        Span<double> mine = stackalloc double[per];
        losses.CopyTo(mine);
        mine[^1] = tokens; // exact below 2⁵³
        var all = new double[per * Communicator.Size];
        Communicator.AllGather<double>(mine, all);
        double lossSum = 0, tokenSum = 0;
        for (var rank = 0; rank < Communicator.Size; rank++)
        {
            for (var i = 0; i < MicroBatchesPerRank; i++)
                lossSum += all[(rank * per) + i];
            tokenSum += all[(rank * per) + per - 1];
        }
        task.NextMicroBatch = stepStart + accumulate;
        if (Communicator.Size > 1)
            task.Model.RandomState = dropoutStart with { Offset = dropoutStart.Offset + ((ulong)accumulate * DropoutStride) };
        return (lossSum, (long)tokenSum);
    }

    /// <summary>Rank 0's <paramref name="value"/> on every rank (a decision only rank 0 may take: the time limit, a stop request, a checkpoint's fate).</summary>
    internal T Agree<T>(T value)
        where T : unmanaged
    {
        Span<T> one = [value];
        Communicator.Broadcast(one, 0);
        return one[0];
    }

    /// <inheritdoc/>
    public void Dispose() => reducer.Dispose();
}
