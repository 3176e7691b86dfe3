using GpuTransformer.Training.Generation;

namespace GpuTransformer.Training.Scoring;

/// <summary>
/// What one row of logits says about the next token: log-softmax in double, then the actual
/// token's log-probability and rank, the entropy, and the top k. Host code: V operations per
/// position plus O(V·k) at worst for the top k.
/// </summary>
internal sealed class NextTokenDistribution(int vocabularySize, int topK, Func<int, string> tokenText)
{
    private readonly double[] logProbabilities = new double[vocabularySize];
    private readonly int[] best = new int[topK];

    /// <summary>The score of <paramref name="actual"/> at <paramref name="position"/> from its logits row. // logits [V]</summary>
    public TokenScore Score(ReadOnlySpan<float> logits, int actual, int position, int context)
    {
        Sampling.LogSoftmax(logits, logProbabilities);
        var target = logProbabilities[actual];
        var rank = 1;
        var entropy = 0.0;
        foreach (var lp in logProbabilities)
        {
            if (lp > target)
                rank++;
            if (lp > double.NegativeInfinity)
                entropy -= Math.Exp(lp) * lp;
        }
        var k = TopIds();
        var candidates = new TokenCandidate[k];
        for (var i = 0; i < k; i++)
            candidates[i] = new TokenCandidate(best[i], tokenText(best[i]), Math.Exp(logProbabilities[best[i]]));
        return new TokenScore(position, actual, tokenText(actual), target, rank, entropy, candidates, context);
    }

    /// <summary>Fills <see cref="best"/> with the k most likely ids, most likely first, ties by smaller id; returns k.</summary>
    private int TopIds()
    {
        var count = 0;
        for (var id = 0; id < logProbabilities.Length; id++)
        {
            var lp = logProbabilities[id];
            // Ids come in ascending order, so an equal value never displaces an earlier id.
            if (count == best.Length && !(lp > logProbabilities[best[count - 1]]))
                continue;
            var slot = count < best.Length ? count++ : count - 1;
            while (slot > 0 && lp > logProbabilities[best[slot - 1]])
            {
                best[slot] = best[slot - 1];
                slot--;
            }
            best[slot] = id;
        }
        return count;
    }
}
