using GpuTransformer.Kernels.Workloads;

namespace GpuTransformer.Tests.Kernels;

[Collection(DeviceCollection.Name)]
public sealed class WorkloadTests(Devices devices)
{
    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Every_demo_workload_matches_its_reference(string backend)
    {
        var device = devices.Get(backend);
        var failures = new List<string>();
        // The simulator's list on every backend: small ragged shapes, every family and direction.
        foreach (var spec in WorkloadSuites.Demo(simulator: true))
        {
            using var workload = spec.Create(device, seed: 7);
            var check = workload.Check();
            Assert.True(check.Elements > 0, $"{spec}: compared nothing");
            if (!check.Passed)
                failures.Add($"{spec}: {check.Worst} ({check.Tolerance})");
        }
        Assert.True(failures.Count == 0, $"{backend}: " + string.Join(Environment.NewLine, failures));
    }

    [Fact]
    public void Demo_suite_covers_every_kernel_family_in_both_sizes()
    {
        string[] families = ["Matmul", "Attention", "Softmax", "LayerNorm", "CrossEntropy", "Activations", "Embedding", "PositionalEncoding", "Dropout", "AdamW", "Reduction", "Elementwise"];
        foreach (var simulator in new[] { true, false })
        {
            var suite = WorkloadSuites.Demo(simulator);
            Assert.Equal(families.Order(), suite.Select(s => s.Family).Distinct().Order());
            Assert.Contains(suite, s => s is AttentionSpec { Backward: true, Unfused: true });
            Assert.Contains(suite, s => s is MatmulSpec { Naive: true });
        }
    }

    [Fact]
    public void Costs_follow_the_stated_conventions()
    {
        var matmul = new MatmulSpec(MatmulLayout.NT, 3, 5, 7).Cost;
        Assert.Equal(2.0 * 3 * 5 * 7, matmul.Flops);
        Assert.Equal(4.0 * (3 * 7 + 7 * 5 + 3 * 5), matmul.Bytes);
        Assert.Equal(ThroughputUnit.GflopsPerSecond, matmul.Unit);

        var forward = new AttentionSpec(2, 4, 128, 64, Causal: false).Cost.Flops;
        Assert.Equal(4.0 * 2 * 4 * 128 * 128 * 64, forward);
        Assert.Equal(forward / 2, new AttentionSpec(2, 4, 128, 64, Causal: true).Cost.Flops);
        Assert.Equal(3.5 * forward, new AttentionSpec(2, 4, 128, 64, Causal: false, Backward: true).Cost.Flops);
        // Unfused counts the same useful work, so GFLOP/s compare like times.
        Assert.Equal(forward, new AttentionSpec(2, 4, 128, 64, Causal: false, Unfused: true).Cost.Flops);

        Assert.Equal(4.0 * 2 * 10 * 20, new SoftmaxSpec(10, 20).Cost.Bytes);
        Assert.Equal(4.0 * 3 * 10 * 20, new SoftmaxSpec(10, 20, Backward: true).Cost.Bytes);
        Assert.Equal(4.0 * (2 * 10 * 20 + 2 * 20 + 2 * 10), new LayerNormSpec(10, 20).Cost.Bytes);
        Assert.Equal(28.0 * 1000, new AdamWSpec(1000).Cost.Bytes);
        Assert.Equal(ThroughputUnit.GigabytesPerSecond, new SoftmaxSpec(10, 20).Cost.Unit);

        Assert.Equal(2.0, new WorkloadCost(4e9, 0, ThroughputUnit.GflopsPerSecond).Rate(2.0));
        Assert.Equal(3.0, new WorkloadCost(0, 3e9, ThroughputUnit.GigabytesPerSecond).Rate(1.0));
    }

    [Fact]
    public void Comparison_passes_within_tolerance_and_fails_outside_it_or_on_nan()
    {
        float[] expected = [1f, -2f, 0f, float.NaN];
        Assert.True(new WorkloadComparison().Add("x", expected, [1f, -2f, 0f, float.NaN], 0, 0).Result().Passed);

        var close = new WorkloadComparison().Add("x", expected, [1.0001f, -2f, 1e-6f, float.NaN], 1e-5, 1e-4).Result();
        Assert.True(close.Passed, close.Worst);
        Assert.Equal(1e-4, close.MaxAbsError, 1e-6);

        var far = new WorkloadComparison().Add("x", expected, [1f, -2.01f, 0f, float.NaN], 1e-5, 1e-4).Result();
        Assert.False(far.Passed);
        Assert.StartsWith("x[1]", far.Worst);

        var nan = new WorkloadComparison().Add("x", [1f], [float.NaN], 1, 1).Result();
        Assert.False(nan.Passed);
        Assert.Equal(double.PositiveInfinity, nan.WorstRatio);

        Assert.False(new WorkloadComparison().Result().Passed);
        Assert.Throws<ArgumentException>(() => new WorkloadComparison().Add("x", [1f], [1f, 2f], 0, 0));
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Check_fails_when_the_kernel_leaves_the_output_unwritten(string backend)
    {
        using var workload = new UnwrittenOutput(devices.Get(backend));
        var check = workload.Check();
        Assert.False(check.Passed);
        Assert.Equal(double.PositiveInfinity, check.WorstRatio);
    }

    [Fact]
    public void Timer_runs_warmup_then_the_planned_repetitions_and_reports_median_and_min()
    {
        var runs = 0;
        var synchronized = 0;
        var timing = WorkloadTimer.Measure(() => runs++, () => synchronized++, new TimingPlan(Warmup: 2, MinRepetitions: 5, MaxRepetitions: 5, MinSeconds: 100));
        Assert.Equal(7, runs);
        Assert.Equal(7, synchronized);
        Assert.Equal(5, timing.Repetitions);
        Assert.True(timing.MinSeconds <= timing.MedianSeconds);

        var extra = 0;
        var longer = WorkloadTimer.Measure(() => { extra++; Thread.Sleep(2); }, () => { }, new TimingPlan(0, 2, 10, MinSeconds: 0.01));
        Assert.InRange(longer.Repetitions, 3, 10);
        Assert.Equal(longer.Repetitions, extra);

        Assert.Throws<ArgumentException>(() => WorkloadTimer.Measure(() => { }, () => { }, new TimingPlan(0, 3, 2, 0)));
    }

    [Fact]
    public void Timer_enqueues_enough_runs_back_to_back_to_fill_the_minimum_sample_time()
    {
        var runs = 0;
        var synchronized = 0;
        var plan = new TimingPlan(Warmup: 1, MinRepetitions: 3, MaxRepetitions: 3, MinSeconds: 0, MinSampleSeconds: 0.02);
        var timing = WorkloadTimer.Measure(() => { runs++; Thread.Sleep(2); }, () => synchronized++, plan);
        // About 0.02 s / 2 ms runs per sample (fewer where a sleep overshoots); one synchronization per sample.
        Assert.InRange(timing.LaunchesPerSample, 2, 11);
        Assert.Equal(1 + 1 + 3, synchronized); // warm-up, the run that sizes the samples, the samples
        Assert.Equal(1 + 1 + (3 * timing.LaunchesPerSample), runs);
        Assert.Equal(3, timing.Repetitions);
        // A sample's time is divided by its runs: one run's time, not the sample's.
        Assert.InRange(timing.MedianSeconds, 0.0015, 0.015);
        Assert.Equal(TimingClock.Host, timing.Clock);

        Assert.Throws<ArgumentException>(() => WorkloadTimer.Measure(() => { }, () => { }, new TimingPlan(0, 1, 1, 0, MinSampleSeconds: double.NaN)));
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Timer_reads_device_events_where_the_device_records_them_and_the_host_clock_elsewhere(string backend)
    {
        var spec = new SoftmaxSpec(64, 48);
        using (var plain = spec.Create(devices.Get(backend)))
            Assert.Equal(TimingClock.Host, WorkloadTimer.Measure(plain, TimingPlan.Quick).Clock);

        using var profiled = ComputeDevice.Create(backend, new DeviceOptions { AllowPortableOpenCL = true, Profiling = true });
        Assert.True(profiled.Profiling);
        using var workload = spec.Create(profiled);
        var timing = WorkloadTimer.Measure(workload, TimingPlan.Quick with { MinSampleSeconds = 0.001 });
        Assert.Equal(TimingClock.DeviceEvents, timing.Clock);
        Assert.True(timing.MinSeconds > 0 && timing.MinSeconds <= timing.MedianSeconds && double.IsFinite(timing.MedianSeconds), timing.ToString());
        Assert.True(workload.Check().Passed, "the workload must still compute the right thing when timed with events");
    }

    /// <summary>A workload whose "kernel" never writes its output: the poisoned output must fail the check.</summary>
    private sealed class UnwrittenOutput : KernelWorkload
    {
        private readonly ArrayView<float> output;

        public UnwrittenOutput(ComputeDevice device)
            : base(device, new ElementwiseAddSpec(16))
        {
            output = Allocate<float>(16);
        }

        public override void Run()
        {
        }

        public override WorkloadCheck Check()
        {
            Poison(output, 16);
            Run();
            return new WorkloadComparison().Add("c", new float[16], Download(output, 16), 1, 1).Result();
        }
    }
}
