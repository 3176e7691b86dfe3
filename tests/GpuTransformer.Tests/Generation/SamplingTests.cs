using GpuTransformer.Training.Generation;

namespace GpuTransformer.Tests.Generation;

/// <summary>The host-side sampling functions against hand-computed cases (no device).</summary>
public sealed class SamplingTests
{
    private const double Tolerance = 1e-12;

    // Cases that start from float logits such as MathF.Log(3) carry float rounding.
    private const double FloatInputTolerance = 1e-7;

    private static void AssertProbabilities(double[] expected, double[] actual, double tolerance = Tolerance)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (var i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= tolerance, $"p[{i}] = {actual[i]}, expected {expected[i]} (all: {string.Join(", ", actual)})");
    }

    [Fact]
    public void Argmax_takes_the_largest_logit_and_the_lowest_id_on_ties()
    {
        Assert.Equal(1, Sampling.Argmax([1f, 3f, 3f, 2f]));
        Assert.Equal(3, Sampling.Argmax([float.NegativeInfinity, -5f, -4f, -1f]));
        Assert.Throws<ArgumentException>(() => Sampling.Argmax([1f, float.NaN]));
        Assert.Throws<ArgumentException>(() => Sampling.Argmax([]));
    }

    [Fact]
    public void Softmax_with_temperature_matches_hand_computed_values()
    {
        // exp(ln k) = k: probabilities 1/6, 2/6, 3/6; −∞ gets 0.
        float[] logits = [0f, MathF.Log(2), MathF.Log(3), float.NegativeInfinity];
        AssertProbabilities([1 / 6.0, 2 / 6.0, 3 / 6.0, 0], Sampling.Softmax(logits, 1.0), FloatInputTolerance);
        // T = 2: exp(ln k / 2) = √k.
        var z = 1 + Math.Sqrt(2) + Math.Sqrt(3);
        var atTwo = Sampling.Softmax(logits, 2.0);
        Assert.Equal(1 / z, atTwo[0], 6);
        Assert.Equal(Math.Sqrt(2) / z, atTwo[1], 6);
        Assert.Equal(Math.Sqrt(3) / z, atTwo[2], 6);
        Assert.Equal(0, atTwo[3]);
        // T = 0 is the limit: everything on the argmax.
        AssertProbabilities([0, 0, 1, 0], Sampling.Softmax(logits, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => Sampling.Softmax(logits, -1));
        Assert.Throws<ArgumentException>(() => Sampling.Softmax([float.NegativeInfinity, float.NegativeInfinity]));
    }

    [Fact]
    public void Log_softmax_is_the_log_of_softmax()
    {
        float[] logits = [0.5f, -1.25f, 3f, 0f];
        var log = new double[4];
        Sampling.LogSoftmax(logits, log);
        var p = Sampling.Softmax(logits);
        for (var i = 0; i < 4; i++)
            Assert.Equal(Math.Log(p[i]), log[i], 12);
    }

    [Fact]
    public void Top_k_keeps_the_k_largest_and_renormalises()
    {
        double[] p = [0.1, 0.4, 0.2, 0.3];
        Sampling.KeepTopK(p, 2);
        AssertProbabilities([0, 4 / 7.0, 0, 3 / 7.0], p);

        double[] ties = [0.25, 0.25, 0.25, 0.25];
        Sampling.KeepTopK(ties, 2);
        AssertProbabilities([0.5, 0.5, 0, 0], ties);

        double[] all = [0.1, 0.4, 0.2, 0.3];
        Sampling.KeepTopK(all, 0);
        AssertProbabilities([0.1, 0.4, 0.2, 0.3], all);
        Sampling.KeepTopK(all, 9);
        AssertProbabilities([0.1, 0.4, 0.2, 0.3], all);
        Assert.Throws<ArgumentOutOfRangeException>(() => Sampling.KeepTopK(all, -1));
    }

    [Theory]
    [InlineData(0.5, new[] { 0, 4 / 7.0, 0, 3 / 7.0 })]            // 0.4 < 0.5, 0.4 + 0.3 ≥ 0.5
    [InlineData(0.4, new[] { 0, 1.0, 0, 0 })]                       // exactly the top token's mass: nothing more
    [InlineData(0.71, new[] { 0, 4 / 9.0, 2 / 9.0, 3 / 9.0 })]      // 0.7 < 0.71: the third token joins
    [InlineData(0.01, new[] { 0, 1.0, 0, 0 })]                      // always at least one token
    [InlineData(1.0, new[] { 0.1, 0.4, 0.2, 0.3 })]                 // 1 keeps everything
    public void Top_p_keeps_the_smallest_nucleus_reaching_p(double topP, double[] expected)
    {
        double[] p = [0.1, 0.4, 0.2, 0.3];
        Sampling.KeepTopP(p, topP);
        AssertProbabilities(expected, p);
    }

    [Fact]
    public void Distribution_applies_temperature_then_top_k_then_top_p()
    {
        float[] logits = [MathF.Log(1), MathF.Log(2), MathF.Log(3), MathF.Log(4)]; // 0.1 0.2 0.3 0.4
        var p = Sampling.Distribution(logits, new SamplingOptions { TopK = 3, TopP = 0.5 });
        // top-3: 2/9, 3/9, 4/9; nucleus 0.5: 4/9 < 0.5, add 3/9 → {2, 3}.
        AssertProbabilities([0, 0, 3 / 7.0, 4 / 7.0], p, FloatInputTolerance);
        AssertProbabilities([0, 0, 0, 1], Sampling.Distribution(logits, new SamplingOptions { Greedy = true, TopK = 2 }));
    }

    [Fact]
    public void Draw_inverts_the_cumulative_distribution_and_skips_zero_probabilities()
    {
        double[] p = [0.2, 0, 0.5, 0.3];
        Assert.Equal(0, Sampling.Draw(p, 0));
        Assert.Equal(0, Sampling.Draw(p, 0.19));
        Assert.Equal(2, Sampling.Draw(p, 0.2));
        Assert.Equal(2, Sampling.Draw(p, 0.69));
        Assert.Equal(3, Sampling.Draw(p, 0.7));
        Assert.Equal(3, Sampling.Draw(p, 0.999999));
        Assert.Throws<ArgumentOutOfRangeException>(() => Sampling.Draw(p, 1.0));
        Assert.Throws<ArgumentException>(() => Sampling.Draw([0.0, 0.0], 0.5));
    }

    [Fact]
    public void Greedy_sampler_takes_the_argmax_and_never_a_banned_id()
    {
        float[] logits = [0.5f, 4f, 3f, -1f];
        foreach (var seed in new ulong[] { 0, 1, 99 })
        {
            Assert.Equal(1, new TokenSampler(new SamplingOptions { Greedy = true, Seed = seed }).Next(logits));
            Assert.Equal(1, new TokenSampler(new SamplingOptions { Temperature = 0, Seed = seed }).Next(logits));
        }
        Assert.Equal(2, new TokenSampler(new SamplingOptions { Greedy = true }, banned: [1]).Next(logits));
        var sampler = new TokenSampler(new SamplingOptions { Temperature = 5, Seed = 3 }, banned: [1, 2]);
        for (var i = 0; i < 200; i++)
            Assert.DoesNotContain(sampler.Next(logits), new[] { 1, 2 });
    }

    [Fact]
    public void Temperature_towards_zero_approaches_greedy()
    {
        float[] logits = [1f, 1.5f, 0.2f, 1.4f];
        var previous = 0.0;
        foreach (var t in new[] { 2.0, 1.0, 0.3, 0.1, 0.01 })
        {
            var p = Sampling.Softmax(logits, t)[1];
            Assert.True(p > previous, $"p(argmax) should grow as T falls: {p} at T = {t} after {previous}");
            previous = p;
        }
        Assert.True(previous > 1 - 1e-4, $"p(argmax) at T = 0.01 is {previous}");
        var cold = new TokenSampler(new SamplingOptions { Temperature = 0.001, Seed = 7 });
        for (var i = 0; i < 100; i++)
            Assert.Equal(1, cold.Next(logits));
    }

    [Fact]
    public void Same_seed_gives_the_same_tokens_and_another_seed_other_tokens()
    {
        float[] logits = [0.1f, 0.3f, 0.2f, 0.25f, 0.15f];
        int[] Draws(ulong seed)
        {
            var sampler = new TokenSampler(new SamplingOptions { Seed = seed, TopP = 0.9 });
            return [.. Enumerable.Range(0, 100).Select(_ => sampler.Next(logits))];
        }
        Assert.Equal(Draws(42), Draws(42));
        Assert.NotEqual(Draws(42), Draws(43));
    }

    [Fact]
    public void Sampled_frequencies_follow_the_filtered_distribution()
    {
        float[] logits = [MathF.Log(0.1f), MathF.Log(0.4f), MathF.Log(0.2f), MathF.Log(0.3f)];
        var sampler = new TokenSampler(new SamplingOptions { TopK = 2, Seed = 2024 });
        var counts = new int[4];
        const int n = 20_000;
        for (var i = 0; i < n; i++)
            counts[sampler.Next(logits)]++;
        Assert.Equal(0, counts[0]);
        Assert.Equal(0, counts[2]);
        // Binomial standard deviation √(n·p·(1−p)) ≈ 70: ±0.02·n is ~6 σ.
        Assert.InRange(counts[1] / (double)n, 4 / 7.0 - 0.02, 4 / 7.0 + 0.02);
    }

    [Theory]
    [InlineData(-0.5, 0, 1.0)]
    [InlineData(double.NaN, 0, 1.0)]
    [InlineData(double.PositiveInfinity, 0, 1.0)]
    [InlineData(1.0, -1, 1.0)]
    [InlineData(1.0, 0, 0.0)]
    [InlineData(1.0, 0, 1.5)]
    public void Invalid_sampling_options_are_refused(double temperature, int topK, double topP)
    {
        var options = new SamplingOptions { Temperature = temperature, TopK = topK, TopP = topP };
        Assert.Throws<ArgumentOutOfRangeException>(() => options.Validate());
        Assert.Throws<ArgumentOutOfRangeException>(() => new TokenSampler(options));
    }
}
