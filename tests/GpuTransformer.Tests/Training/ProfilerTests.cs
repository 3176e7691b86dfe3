using System.Text.Json;
using GpuTransformer.Kernels.Profiling;
using GpuTransformer.Training.Optimization;

namespace GpuTransformer.Tests.Training;

/// <summary>
/// The per-kernel profiler on every backend present: over profiled training steps the rows add
/// up to the time measured around them (within 10 %, and no row counted twice: the host
/// remainder is not negative), every kernel family a language-model step launches appears,
/// forward/backward/optimizer and the layers are told apart; with no profiler attached a scope
/// costs no allocation.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class ProfilerTests(Devices devices, ITestOutputHelper output)
{
    /// <summary>Post-LN with dropout and GELU, untied: every family a training step of <c>train</c> launches.</summary>
    private static readonly LanguageModelConfig Lm = new()
    {
        DModel = 16, NHead = 2, NumLayers = 2, DimFeedforward = 24, Dropout = 0.1f, Activation = "gelu_tanh",
        VocabularySize = 23, MaxSequenceLength = 9, TieWeights = false, PadId = -1,
    };

    /// <summary>What a language-model training step launches, read from the code: the embedding with the positional encoding added in its pass, the blocks, the loss, the clip and AdamW.</summary>
    private static readonly string[] StepFamilies =
        ["Activation", "AdamW", "Attention", "CrossEntropy", "Dropout", "Elementwise", "Embedding", "LayerNorm", "Matmul", "Memset", "Reduction"];

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Rows_add_up_to_the_measured_steps_and_every_launched_family_appears(string backend)
    {
        var device = devices.Get(backend);
        var random = new Random(5);
        var tokens = Enumerable.Range(0, (2 * 8) + 1).Select(_ => random.Next(Lm.VocabularySize)).ToArray();
        var batch = new ModelBatch(new TokenIds(tokens.AsMemory(0, 16), 2, 8), new TokenIds(tokens.AsMemory(1, 16), 2, 8));
        using var model = new LanguageModel(device, Lm, seed: 3);
        using var optimizer = new AdamWOptimizer(model.Parameters(), new AdamWOptions { MaxGradNorm = 1 });
        void Step()
        {
            model.ZeroGradients();
            model.TrainStep(batch);
            optimizer.Step(1e-3, readNorm: true);
        }

        Step(); // compiles everything outside the window
        var profiler = KernelProfiler.Attach(device);
        try
        {
            Step(); // attached but no window: not counted
            Assert.Empty(profiler.Report("none").Entries);
            const int steps = 3;
            var clock = Stopwatch.StartNew();
            profiler.Start();
            for (var i = 0; i < steps; i++)
                Step();
            profiler.Stop(steps);
            var measured = clock.Elapsed.TotalSeconds;
            var report = profiler.Report($"test step on {backend}");
            output.WriteLine(report.ToMarkdown());

            Assert.Equal(steps, report.Steps);
            Assert.True(report.HostSeconds >= 0, $"scoped rows {report.ScopedSeconds:F4} s exceed the measured {report.MeasuredSeconds:F4} s: something is counted twice");
            foreach (var table in new[] { report.ByFamily(), report.ByLayer(), report.ByPhase() })
            {
                var sum = table.Sum(r => r.Seconds);
                Assert.InRange(sum, 0.9 * measured, 1.1 * measured);
                Assert.InRange(table.Sum(r => r.Share), 0.999, 1.001);
            }
            Assert.Equal(StepFamilies, report.Families);

            // Phases and layers: the forward and backward of every block, the optimizer's clip and update.
            var phases = report.Entries.Where(e => e.Kind == ProfileRowKind.Kernel).Select(e => e.Phase).Distinct().ToHashSet();
            Assert.Equal(new HashSet<ProfilePhase> { ProfilePhase.Forward, ProfilePhase.Backward, ProfilePhase.Optimizer }, phases);
            Assert.All(report.Entries.Where(e => e.Family == "AdamW"), e => Assert.Equal(ProfilePhase.Optimizer, e.Phase));
            var layers = report.ByLayer().Select(r => r.Label).ToHashSet();
            Assert.Superset(new HashSet<string> { "layers.0", "layers.1", "tok_embed + positions", "norm + lm_head", "loss" }, layers);
            var attention = report.Entries.Where(e => e.Family == "Attention").ToList();
            Assert.All(attention, e => Assert.StartsWith("layers.", e.Layer));
            var attentionBackward = batch.Inputs.Length <= device.Tuning.UnfusedAttentionMaxLength ? "unfused backward" : "backward dK/dV";
            Assert.Contains(attention, e => e.Kernel == attentionBackward && e.Phase == ProfilePhase.Backward);
            // The packed model: two runs (weight-decayed, not), so two AdamW and two sum-of-squares launches and one memset per step, whatever the tensor count.
            Assert.Equal(2, optimizer.LaunchesPerStep);
            Assert.Equal(steps * 2, report.Entries.Single(e => e.Family == "AdamW").Calls);
            Assert.Equal(steps * 2, report.Entries.Single(e => e.Kernel == "grad-norm squares").Calls);
            Assert.Equal(steps, report.Entries.Where(e => e.Family == "Memset" && e.Phase == ProfilePhase.Optimizer).Sum(e => e.Calls));
            Assert.Contains(report.Entries, e => e.Family == "Embedding" && e.Kernel == "forward + PE"); // the encoding in the lookup's pass
            Assert.Contains(report.Entries, e => e.Kind == ProfileRowKind.ReadBack); // the loss and the norm
            Assert.Contains(report.ByFamily(), r => r.Label == "Matmul" && r.GflopsPerSecond > 0);

            using var json = JsonDocument.Parse(report.ToJson());
            Assert.Equal(steps, json.RootElement.GetProperty("steps").GetInt64());
            Assert.Equal(report.ByFamily().Count, json.RootElement.GetProperty("byFamily").GetArrayLength());
        }
        finally
        {
            profiler.Detach();
        }
        Assert.Null(device.Profiler);
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Without_a_profiler_scopes_allocate_nothing_and_a_window_must_be_open(string backend)
    {
        var device = devices.Get(backend);
        Assert.Null(device.Profiler);
        using (device.Profile("Matmul", "multiply NN", 1, 1))
        using (device.InPhase(ProfilePhase.Forward))
        using (device.InLayer("layers", 0))
        {
        }
        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < 100; i++)
        {
            using var scope = device.Profile("Matmul", "multiply NN", 2.0 * i, 4.0 * i);
            using var phase = device.InPhase(ProfilePhase.Backward);
            using var layer = device.InLayer("layers", i);
        }
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);

        var profiler = KernelProfiler.Attach(device);
        try
        {
            var error = Assert.Throws<InvalidOperationException>(() => profiler.Stop(1));
            Assert.Contains("no open window", error.Message);
            profiler.Start();
            Assert.Throws<InvalidOperationException>(profiler.Start);
            Assert.Throws<ArgumentOutOfRangeException>(() => profiler.Stop(-1));
            profiler.Stop(0);
        }
        finally
        {
            profiler.Detach();
        }
    }
}
