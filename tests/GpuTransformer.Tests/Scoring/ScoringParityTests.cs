using GpuTransformer.Tests.Layers;
using GpuTransformer.Training.Parity;
using GpuTransformer.Training.Scoring;

namespace GpuTransformer.Tests.Scoring;

/// <summary>
/// Scoring against PyTorch on the parity golden models (tests/golden/parity, float64 references):
/// each scored token's log-probability is −cross-entropy of PyTorch's logits at that position,
/// log_softmax(logits)[target] (the C# cross-entropy reference, in double), and the chain-rule total of a sequence is
/// the sum of its tokens'. A language model's row is scored as the id sequence
/// ids[0 … L) + targets[L − 1] (token 0 context); an encoder–decoder's as log P(target | source)
/// with the target read from tgt_in and scored against tgt_out (&lt;eos&gt; included). All rows of a
/// case go in one batch, so the padding of ours differs from the golden's.
/// <para>
/// Tolerances (<see cref="ParityTolerance.Default"/>, as the parity tests' logits and loss):
/// the per-token log-probabilities and entropies max|a − b| ≤ 1e-4 · max|b| + 1e-8 over the case;
/// each sequence's total and the mean over the case (= the golden loss) within 1e-5 relative; the
/// top-k probabilities within 1e-4 · max|b|; the rank exact unless another id is within 1e-5 of the
/// target's log-probability in the reference.
/// </para>
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class ScoringParityTests(Devices devices, ITestOutputHelper output)
{
    private const int Pad = 0;
    private const int Bos = 1;
    private const int Eos = 2;

    [Theory]
    [MemberData(nameof(ParityTests.OneStepCases), MemberType = typeof(ParityTests))]
    public void Token_log_probabilities_are_minus_the_cross_entropy_of_PyTorchs_logits(string backend, string name)
    {
        var golden = ParitySpec.Load(name);
        using var model = ModelParity.Load(devices.Get(backend), golden);
        var shape = golden.Tensors["logits"].Shape;                                   // [B, T, V]
        var (rows, length, v) = (shape[0], shape[1], shape[2]);
        var logits = golden.Floats("logits");
        var options = new ScoringOptions { TopK = 3 };

        IReadOnlyList<SequenceScore> scores;
        int[] targets;                                                                  // [B, T]: the id each position predicts, pad where none
        if (model is LanguageModel lm)
        {
            var ids = golden.Ints("ids");
            targets = golden.Ints("targets");
            var sequences = Enumerable.Range(0, rows).Select(b =>
            {
                var real = Real(targets, b, length);
                return (int[])[.. ids.AsSpan(b * length, real), targets[(b * length) + real - 1]];
            }).ToList();
            scores = new LanguageModelScorer(lm).ScoreIds(sequences, options);
        }
        else
        {
            var transformer = (Transformer)model;
            var (source, targetInput) = (golden.Ints("src"), golden.Ints("tgt_in"));
            targets = golden.Ints("tgt_out");
            var s = golden.Tensors["src"].Shape[1];
            var pairs = Enumerable.Range(0, rows).Select(b => new SequencePair(
                source.AsSpan(b * s, Real(source, b, s)).ToArray(),
                targetInput.AsSpan((b * length) + 1, Real(targetInput, b, length) - 1).ToArray())).ToList();
            scores = new TranslationScorer(transformer, Bos, Eos, Label, Label).Score(pairs, options);
        }

        var ours = new List<double>();
        var reference = new List<double>();
        var oursEntropy = new List<double>();
        var referenceEntropy = new List<double>();
        for (var b = 0; b < rows; b++)
        {
            var score = scores[b];
            var real = Real(targets, b, length);
            Assert.Equal(real, score.Tokens.Count);
            var expectedTotal = 0.0;
            for (var t = 0; t < real; t++)
            {
                var token = score.Tokens[t];
                var target = targets[(b * length) + t];
                Assert.Equal(target, token.Id);
                Assert.Equal(target, score.Ids[t + 1]);
                // −cross-entropy of PyTorch's logits row, and the whole log-softmax for the rest, from the C# reference in double.
                var row = Array.ConvertAll(logits[(((b * length) + t) * v)..((((b * length) + t) * v) + v)], z => (double)z);
                var (losses, logSumExp) = CrossEntropyReference.Forward(row, [target], 1, v);
                var logProbabilities = row.Select(z => z - logSumExp[0]).ToArray();
                ours.Add(token.LogProbability);
                reference.Add(-losses[0]);
                oursEntropy.Add(token.Entropy);
                referenceEntropy.Add(-logProbabilities.Sum(lp => Math.Exp(lp) * lp));
                expectedTotal += logProbabilities[target];
                foreach (var candidate in token.TopK)
                    Assert.True(Math.Abs(candidate.Probability - Math.Exp(logProbabilities[candidate.Id])) <= 1e-4, $"{name}: top-k probability of id {candidate.Id}");
                var above = logProbabilities.Count(lp => lp > logProbabilities[target] + 1e-5);
                var aboveOrTied = logProbabilities.Count(lp => lp > logProbabilities[target] - 1e-5) - 1;
                Assert.InRange(token.Rank - 1, above, aboveOrTied);
            }
            Assert.Equal(score.Tokens.Sum(x => x.LogProbability), score.TotalLogProbability, 12);
            Assert.True(Math.Abs(score.TotalLogProbability - expectedTotal) <= ParityTolerance.Default.LossRelative * Math.Abs(expectedTotal),
                $"{name} row {b}: total {score.TotalLogProbability} vs PyTorch {expectedTotal}");
        }
        var logProbabilityDifference = AssertClose(ours, reference, $"{name} on {backend}: log-probabilities");
        AssertClose(oursEntropy, referenceEntropy, $"{name} on {backend}: entropies");

        // The golden loss is the mean cross-entropy over every counted target: minus the mean of the chain-rule totals per token.
        var loss = golden.Floats("loss")[0];
        var mean = -scores.Sum(s => s.TotalLogProbability) / scores.Sum(s => s.Tokens.Count);
        Assert.True(Math.Abs(mean - loss) <= ParityTolerance.Default.LossRelative * Math.Abs(loss), $"{name}: mean −ln P {mean} vs golden loss {loss}");
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{name} on {backend}: {ours.Count} tokens, max |Δ ln P| {logProbabilityDifference:0.00e+0}, mean −ln P {mean:F6} vs loss {loss:F6}"));
    }

    private static string Label(int id) => id.ToString(CultureInfo.InvariantCulture);

    /// <summary>Non-pad entries at the start of row <paramref name="b"/> of a [B, T] id tensor.</summary>
    private static int Real(int[] ids, int b, int length)
    {
        var row = ids.AsSpan(b * length, length);
        var pad = row.IndexOf(Pad);
        return pad < 0 ? length : pad;
    }

    /// <summary>Asserts max|a − b| ≤ 1e-4 · max|b| + 1e-8 (the parity tests' logits rule); returns max|a − b|.</summary>
    private static double AssertClose(List<double> actual, List<double> expected, string what)
    {
        var tolerance = ParityTolerance.Default;
        var worst = actual.Zip(expected, (a, b) => Math.Abs(a - b)).Max();
        var allowed = (tolerance.Relative * expected.Max(Math.Abs)) + tolerance.AbsoluteFloor;
        Assert.True(worst <= allowed, string.Create(CultureInfo.InvariantCulture, $"{what}: max |Δ| {worst:0.00e+0} > allowed {allowed:0.00e+0}"));
        return worst;
    }
}
