using GpuTransformer.Training.Schedules;

namespace GpuTransformer.Tests.Training;

public sealed class ScheduleAndBaselineTests
{
    [Fact]
    public void Warmup_cosine_matches_the_formula_at_known_steps()
    {
        var schedule = new WarmupCosineSchedule(PeakLearningRate: 1e-3, WarmupSteps: 100, TotalSteps: 1100, MinLearningRate: 1e-4);
        Assert.Equal(1e-5, schedule.At(1), tolerance: 1e-15);
        Assert.Equal(5e-4, schedule.At(50), tolerance: 1e-15);
        Assert.Equal(1e-3, schedule.At(100), tolerance: 1e-15);
        // Halfway through the decay cos(π/2) = 0: the mean of peak and min.
        Assert.Equal(5.5e-4, schedule.At(600), tolerance: 1e-15);
        // A quarter in: min + ½(peak − min)(1 + cos(π/4)).
        Assert.Equal(1e-4 + 0.5 * 9e-4 * (1 + Math.Sqrt(0.5)), schedule.At(350), tolerance: 1e-15);
        Assert.Equal(1e-4, schedule.At(1100), tolerance: 1e-15);
        Assert.Equal(1e-4, schedule.At(5000), tolerance: 1e-15);
        Assert.Throws<ArgumentOutOfRangeException>(() => schedule.At(0));
        // No warmup: decay starts at once, step 1 is a tenth of the way through 10 steps.
        Assert.Equal(0.5 * 2e-3 * (1 + Math.Cos(Math.PI * 0.1)), LearningRateSchedules.WarmupCosine(1, 2e-3, 0, 10), tolerance: 1e-15);
    }

    [Fact]
    public void Inverse_square_root_is_the_papers_formula()
    {
        var schedule = new InverseSqrtSchedule(DModel: 512, WarmupSteps: 4000);
        Assert.Equal(Math.Pow(512, -0.5) * Math.Pow(4000, -1.5), schedule.At(1), tolerance: 1e-22);
        // Peak at step = warmup: (d_model · warmup)^−0.5 ≈ 6.99e-4.
        Assert.Equal(1 / Math.Sqrt(512.0 * 4000), schedule.At(4000), tolerance: 1e-15);
        Assert.Equal(schedule.Peak, schedule.At(4000), tolerance: 1e-15);
        Assert.True(schedule.At(3999) < schedule.At(4000) && schedule.At(4001) < schedule.At(4000));
        Assert.Equal(Math.Pow(512, -0.5) * Math.Pow(16000, -0.5), schedule.At(16000), tolerance: 1e-15);
        Assert.Equal(2 * schedule.At(777), new InverseSqrtSchedule(512, 4000, Scale: 2).At(777), tolerance: 1e-15);
    }

    [Fact]
    public void Unigram_baseline_matches_a_hand_computation()
    {
        // Train: id 0 ×3, id 1 ×1 (N = 4), V = 3, add-one: p = (4/7, 2/7, 1/7).
        var baseline = UnigramBaseline.Compute([0, 0, 1, 0], [0, 1, 2, 2], vocabularySize: 3);
        var expected = -(Math.Log(4.0 / 7) + Math.Log(2.0 / 7) + 2 * Math.Log(1.0 / 7)) / 4;
        Assert.Equal(expected, baseline.CrossEntropy, 12);
        Assert.Equal(Math.Exp(expected), baseline.Perplexity, 12);
        Assert.Equal((4L, 4L, 3), (baseline.TrainTokens, baseline.EvaluatedTokens, baseline.VocabularySize));

        // Uniform data: perplexity = V exactly.
        Assert.Equal(4, UnigramBaseline.Compute([0, 1, 2, 3], [3, 2, 1, 0], 4).Perplexity, 12);
        Assert.Throws<ArgumentException>(() => UnigramBaseline.Compute([0, 5], [0], 3));
        Assert.Throws<ArgumentException>(() => UnigramBaseline.Compute([0], [], 3));
    }
}
