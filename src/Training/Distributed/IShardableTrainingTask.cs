namespace GpuTransformer.Training.Distributed;

/// <summary>
/// A training task whose micro-batches are numbered: micro-batch m is the same data whichever
/// process draws it, and the task can jump to any m. <see cref="DataParallel"/> uses it to give
/// each rank a disjoint share of the stream a single process would draw.
/// </summary>
internal interface IShardableTrainingTask : ITrainingTask
{
    /// <summary>The number of the next micro-batch <see cref="ITrainingTask.TrainMicroBatch"/> draws (in one process: the micro-batches drawn so far); set it to jump.</summary>
    long NextMicroBatch { get; set; }

    /// <summary>Sequences (rows) in one micro-batch.</summary>
    int SequencesPerMicroBatch { get; }
}
