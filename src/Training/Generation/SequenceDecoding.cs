using System.Globalization;

namespace GpuTransformer.Training.Generation;

/// <summary>
/// Next-token scores for R hypotheses (rows) decoded together, token by token. The scorer
/// remembers each row's history (a key/value cache for a model): <see cref="Step"/> appends one
/// token per row, <see cref="Reorder"/> lets row r continue row parents[r] (beam search).
/// </summary>
public interface ISequenceScorer
{
    /// <summary>R, the rows decoded together.</summary>
    int Rows { get; }

    /// <summary>V, the ids scored.</summary>
    int VocabularySize { get; }

    /// <summary>Most tokens a row can be fed (its history length limit).</summary>
    int MaxSteps { get; }

    /// <summary>Appends <paramref name="lastTokens"/>[r] to row r and writes log p(next | row's history) into <paramref name="logProbabilities"/> [R, V].</summary>
    void Step(ReadOnlySpan<int> lastTokens, Span<double> logProbabilities);

    /// <summary>Row r continues with the history of row <paramref name="parents"/>[r].</summary>
    void Reorder(ReadOnlySpan<int> parents);
}

/// <summary>
/// A scorer that also makes the greedy choice itself, where its scores live (a model's: on the
/// device), so that a greedy step returns R ids and R log-probabilities instead of [R, V] scores.
/// <see cref="SequenceDecoding.Greedy"/> uses it when the scorer has it.
/// </summary>
public interface IGreedySequenceScorer : ISequenceScorer
{
    /// <summary>
    /// Appends <paramref name="lastTokens"/>[r] to row r (as <see cref="ISequenceScorer.Step"/>) and writes
    /// row r's most likely next token into <paramref name="next"/>[r] — the ids in
    /// <paramref name="banned"/> never, ties to the lowest id, what the host's argmax over
    /// <see cref="ISequenceScorer.Step"/>'s row picks — and its log p (normalised over the whole
    /// vocabulary, banned ids included, as <see cref="ISequenceScorer.Step"/>'s) into <paramref name="logProbabilities"/>[r].
    /// </summary>
    /// <exception cref="ArgumentException">Spans of other lengths than R, or a row of scores holding a NaN.</exception>
    void StepGreedy(ReadOnlySpan<int> lastTokens, ReadOnlySpan<int> banned, Span<int> next, Span<double> logProbabilities);
}

/// <summary>A decoded sequence.</summary>
/// <param name="Tokens">The tokens after &lt;bos&gt;, without the final &lt;eos&gt;.</param>
/// <param name="LogProbability">Σ log p of the tokens, the final &lt;eos&gt; included when it was emitted.</param>
/// <param name="Score">What beam search ranks by: the log-probability divided by the length penalty.</param>
/// <param name="Finished">Whether it ended with &lt;eos&gt; (not cut by the step limit).</param>
public sealed record Hypothesis(int[] Tokens, double LogProbability, double Score, bool Finished)
{
    /// <inheritdoc/>
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"[{string.Join(' ', Tokens)}] log p {LogProbability:F4} score {Score:F4}{(Finished ? "" : " (cut)")}");
}

/// <summary>Beam search settings.</summary>
public sealed record BeamSearchOptions
{
    /// <summary>k, hypotheses kept per source (1 is greedy decoding).</summary>
    public int Width { get; init; } = 4;

    /// <summary>
    /// α of GNMT's length penalty lp(n) = ((5 + n)/6)^α (Wu et al. 2016), n = tokens including
    /// &lt;eos&gt;; hypotheses are ranked by log p / lp. 0 ranks by log p alone (favouring short outputs).
    /// </summary>
    public double LengthPenalty { get; init; } = 0.6;

    /// <summary>Returns this after checking the fields.</summary>
    public BeamSearchOptions Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(Width, 1, nameof(Width));
        if (!double.IsFinite(LengthPenalty) || LengthPenalty < 0)
            throw new ArgumentOutOfRangeException(nameof(LengthPenalty), LengthPenalty, "The length penalty α must be finite and ≥ 0.");
        return this;
    }

    /// <summary>The score of a hypothesis of <paramref name="length"/> tokens with <paramref name="logProbability"/>.</summary>
    public double Score(double logProbability, int length) =>
        LengthPenalty == 0 ? logProbability : logProbability / Math.Pow((5.0 + length) / 6.0, LengthPenalty);
}

/// <summary>
/// Greedy decoding and beam search over an <see cref="ISequenceScorer"/>, batched: every source
/// (and, for beam search, each of its k beams) is one row of the scorer, so one step scores all
/// of them at once. Tokens in <c>banned</c> (e.g. &lt;pad&gt; and &lt;bos&gt;) are never produced.
/// Ties go to the lower (beam, id), so beam width 1 gives exactly greedy decoding.
/// </summary>
public static class SequenceDecoding
{
    /// <summary>
    /// Greedy decoding of <see cref="ISequenceScorer.Rows"/> sources: each row starts from
    /// <paramref name="bos"/> and takes the most likely token until <paramref name="eos"/> or
    /// <see cref="ISequenceScorer.MaxSteps"/> tokens. An <see cref="IGreedySequenceScorer"/> makes
    /// the choice itself (a model's on the device: R ids and log-probabilities come back per step,
    /// not [R, V] scores); its log-probabilities are float32 there, its tokens the same.
    /// </summary>
    public static Hypothesis[] Greedy(ISequenceScorer scorer, int bos, int eos, IEnumerable<int>? banned = null)
    {
        ArgumentNullException.ThrowIfNull(scorer);
        var rows = scorer.Rows;
        var v = scorer.VocabularySize;
        var bannedIds = banned?.ToArray() ?? [];
        var tokens = Enumerable.Range(0, rows).Select(_ => new List<int>()).ToArray();
        var logProbability = new double[rows];
        var finished = new bool[rows];
        var last = Enumerable.Repeat(bos, rows).ToArray();
        var choice = new int[rows];
        var choiceLogP = new double[rows];
        var scores = scorer is IGreedySequenceScorer ? [] : new double[rows * v];
        for (var step = 0; step < scorer.MaxSteps && finished.Contains(false); step++)
        {
            if (scorer is IGreedySequenceScorer greedy)
            {
                greedy.StepGreedy(last, bannedIds, choice, choiceLogP);
            }
            else
            {
                scorer.Step(last, scores);
                for (var r = 0; r < rows; r++)
                {
                    var row = scores.AsSpan(r * v, v);
                    Ban(row, bannedIds);
                    choice[r] = ArgmaxLowest(row);
                    choiceLogP[r] = row[choice[r]];
                }
            }
            for (var r = 0; r < rows; r++)
            {
                if (finished[r])
                {
                    last[r] = eos;
                    continue;
                }
                var best = choice[r];
                logProbability[r] += choiceLogP[r];
                last[r] = best;
                if (best == eos)
                    finished[r] = true;
                else
                    tokens[r].Add(best);
            }
        }
        return [.. Enumerable.Range(0, rows).Select(r => new Hypothesis([.. tokens[r]], logProbability[r], logProbability[r], finished[r]))];
    }

    /// <summary>
    /// Beam search for <paramref name="sources"/> sources with k = <see cref="BeamSearchOptions.Width"/>
    /// beams each; the scorer's rows are source-major (row = source·k + beam), every beam of a
    /// source conditioned on that source. Each step expands every live beam by every token,
    /// keeps the 2k best candidates by log-probability, moves those ending in &lt;eos&gt; to the
    /// source's finished list (scored with the length penalty) and keeps the best k others as the
    /// new beams (the scorer's history is reordered to follow them). A source is done when it has
    /// k finished hypotheses and no live beam scores better now than the k-th best of them (Hugging
    /// Face's default criterion: exact without a length penalty, since log p only falls; with one
    /// a heuristic), or when no live beam is left; at <see cref="ISequenceScorer.MaxSteps"/> its
    /// live beams count as finished (marked cut). Returns each source's best hypothesis by score.
    /// </summary>
    /// <exception cref="ArgumentException">The scorer does not have sources × k rows.</exception>
    public static Hypothesis[] BeamSearch(ISequenceScorer scorer, int sources, BeamSearchOptions options, int bos, int eos, IEnumerable<int>? banned = null)
    {
        ArgumentNullException.ThrowIfNull(scorer);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var k = options.Width;
        if (scorer.Rows != sources * k)
            throw new ArgumentException($"Beam search over {sources} sources with width {k} needs {sources * k} scorer rows, the scorer has {scorer.Rows}.", nameof(scorer));
        var rows = scorer.Rows;
        var v = scorer.VocabularySize;
        var bannedIds = banned?.ToArray() ?? [];

        // Live beams per row: tokens so far and their log-probability. Only beam 0 of each source
        // starts alive, so the first expansion does not produce k copies of the same token.
        var beams = new List<int>[rows];
        var beamLogP = new double[rows];
        for (var r = 0; r < rows; r++)
        {
            beams[r] = [];
            beamLogP[r] = r % k == 0 ? 0 : double.NegativeInfinity;
        }
        var finished = Enumerable.Range(0, sources).Select(_ => new List<Hypothesis>()).ToArray();
        var done = new bool[sources];
        var last = Enumerable.Repeat(bos, rows).ToArray();
        var scores = new double[rows * v];
        var parents = new int[rows];
        var candidates = new List<(double LogP, int Beam, int Token)>(k * v);

        for (var step = 1; step <= scorer.MaxSteps && done.Contains(false); step++)
        {
            scorer.Step(last, scores);
            var nextBeams = new List<int>[rows];
            var nextLogP = new double[rows];
            for (var s = 0; s < sources; s++)
            {
                var first = s * k;
                if (done[s])
                {
                    for (var j = 0; j < k; j++)
                    {
                        parents[first + j] = first + j;
                        nextBeams[first + j] = beams[first + j];
                        nextLogP[first + j] = double.NegativeInfinity;
                        last[first + j] = eos;
                    }
                    continue;
                }
                candidates.Clear();
                for (var j = 0; j < k; j++)
                {
                    if (double.IsNegativeInfinity(beamLogP[first + j]))
                        continue;
                    var row = scores.AsSpan((first + j) * v, v);
                    Ban(row, bannedIds);
                    for (var token = 0; token < v; token++)
                    {
                        if (!double.IsNegativeInfinity(row[token]))
                            candidates.Add((beamLogP[first + j] + row[token], j, token));
                    }
                }
                // Best first; ties to the lower (beam, token), as greedy's argmax.
                candidates.Sort((a, b) => a.LogP != b.LogP ? b.LogP.CompareTo(a.LogP) : a.Beam != b.Beam ? a.Beam.CompareTo(b.Beam) : a.Token.CompareTo(b.Token));
                var kept = 0;
                foreach (var (logP, j, token) in candidates.Take(2 * k))
                {
                    if (kept == k)
                        break;
                    var history = beams[first + j];
                    if (token == eos)
                    {
                        finished[s].Add(new Hypothesis([.. history], logP, options.Score(logP, history.Count + 1), Finished: true));
                        continue;
                    }
                    parents[first + kept] = first + j;
                    nextBeams[first + kept] = [.. history, token];
                    nextLogP[first + kept] = logP;
                    last[first + kept] = token;
                    kept++;
                }
                // Fewer than k continuations (tiny vocabulary): the remaining rows are dead.
                for (var j = kept; j < k; j++)
                {
                    parents[first + j] = first + j;
                    nextBeams[first + j] = [];
                    nextLogP[first + j] = double.NegativeInfinity;
                    last[first + j] = eos;
                }
                done[s] = kept == 0 || (finished[s].Count >= k && BestLiveScore(options, nextBeams, nextLogP, first, kept) <= KthBestScore(finished[s], k));
            }
            beams = nextBeams;
            beamLogP = nextLogP;
            if (done.Contains(false) && step < scorer.MaxSteps)
                scorer.Reorder(parents);
        }

        var best = new Hypothesis[sources];
        for (var s = 0; s < sources; s++)
        {
            if (!done[s])
            {
                // Cut at the step limit: the live beams compete as they are.
                for (var j = 0; j < k; j++)
                {
                    var r = (s * k) + j;
                    if (!double.IsNegativeInfinity(beamLogP[r]))
                        finished[s].Add(new Hypothesis([.. beams[r]], beamLogP[r], options.Score(beamLogP[r], beams[r].Count), Finished: false));
                }
            }
            best[s] = finished[s].OrderByDescending(h => h.Score).First();
        }
        return best;
    }

    /// <summary>The best score a live beam of one source has now (length-normalised).</summary>
    private static double BestLiveScore(BeamSearchOptions options, List<int>[] beams, double[] logP, int first, int count)
    {
        var best = double.NegativeInfinity;
        for (var j = 0; j < count; j++)
            best = Math.Max(best, options.Score(logP[first + j], beams[first + j].Count));
        return best;
    }

    private static double KthBestScore(List<Hypothesis> finished, int k) =>
        finished.Select(h => h.Score).OrderDescending().ElementAt(k - 1);

    private static void Ban(Span<double> row, int[] banned)
    {
        foreach (var id in banned)
        {
            if ((uint)id < (uint)row.Length)
                row[id] = double.NegativeInfinity;
        }
    }

    private static int ArgmaxLowest(ReadOnlySpan<double> row)
    {
        var best = 0;
        for (var i = 1; i < row.Length; i++)
        {
            if (row[i] > row[best])
                best = i;
        }
        return best;
    }
}
