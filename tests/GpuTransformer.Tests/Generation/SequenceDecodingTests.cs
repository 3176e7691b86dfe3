using GpuTransformer.Training.Generation;

namespace GpuTransformer.Tests.Generation;

/// <summary>
/// A scorer given by a table: p(next | source, history) from a function, histories kept per row
/// and moved on reorder exactly as a model's key/value cache would be.
/// </summary>
internal sealed class ToyScorer(int rows, int vocabulary, int maxSteps, int copies, Func<int, IReadOnlyList<int>, double[]> next) : ISequenceScorer
{
    private List<int>[] histories = [.. Enumerable.Range(0, rows).Select(_ => new List<int>())];

    public int Rows => rows;

    public int VocabularySize => vocabulary;

    public int MaxSteps => maxSteps;

    public int Steps { get; private set; }

    public void Step(ReadOnlySpan<int> lastTokens, Span<double> logProbabilities)
    {
        Assert.True(++Steps <= maxSteps, "decoding ran past MaxSteps");
        for (var r = 0; r < rows; r++)
        {
            histories[r].Add(lastTokens[r]);
            // The history after <bos>: what the next token is conditioned on.
            var p = next(r / copies, histories[r].Skip(1).ToList());
            Assert.Equal(vocabulary, p.Length);
            for (var v = 0; v < vocabulary; v++)
                logProbabilities[(r * vocabulary) + v] = Math.Log(p[v]);
        }
    }

    public void Reorder(ReadOnlySpan<int> parents)
    {
        var old = histories;
        histories = new List<int>[rows];
        for (var r = 0; r < rows; r++)
            histories[r] = [.. old[parents[r]]];
    }
}

/// <summary>Greedy decoding and beam search on toy scorers whose answers are computed by hand.</summary>
public sealed class SequenceDecodingTests
{
    // Ids: 0 <pad>, 1 <bos>, 2 <eos>, 3 a, 4 b.
    private const int Pad = 0, Bos = 1, Eos = 2, A = 3, B = 4;
    private static readonly int[] Banned = [Pad, Bos];

    /// <summary>
    /// After &lt;bos&gt;: a 0.6, b 0.4. After a: eos 0.3, a 0.35, b 0.35. After b: eos 0.9, a 0.05, b 0.05.
    /// After two tokens: eos. Greedy takes a, a, eos (p = 0.21); the best sequence is b, eos (0.36).
    /// </summary>
    private static double[] GreedyTrap(int source, IReadOnlyList<int> history) => history switch
    {
        [] => [0, 0, 0, 0.6, 0.4],
        [A] => [0, 0, 0.3, 0.35, 0.35],
        [B] => [0, 0, 0.9, 0.05, 0.05],
        _ => [0, 0, 1, 0, 0],
    };

    /// <summary>After &lt;bos&gt;: eos 0.4, a 0.6; after a: eos 0.6, a 0.4; then eos. Short (empty) wins without a length penalty, "a" with α = 1.</summary>
    private static double[] ShortOrLong(int source, IReadOnlyList<int> history) => history switch
    {
        [] => [0, 0, 0.4, 0.6, 0],
        [A] => [0, 0, 0.6, 0.4, 0],
        _ => [0, 0, 1, 0, 0],
    };

    [Fact]
    public void Greedy_is_suboptimal_on_the_trap_and_beam_search_finds_the_best_sequence()
    {
        var greedy = SequenceDecoding.Greedy(new ToyScorer(1, 5, 5, 1, GreedyTrap), Bos, Eos, Banned)[0];
        Assert.Equal([A, A], greedy.Tokens); // a, then a/b tie → lower id a
        Assert.Equal(Math.Log(0.21), greedy.LogProbability, 12);
        Assert.True(greedy.Finished);

        var beam = SequenceDecoding.BeamSearch(new ToyScorer(2, 5, 5, 2, GreedyTrap), 1, new BeamSearchOptions { Width = 2, LengthPenalty = 0 }, Bos, Eos, Banned)[0];
        Assert.Equal([B], beam.Tokens);
        Assert.Equal(Math.Log(0.36), beam.LogProbability, 12);
        Assert.True(beam.LogProbability > greedy.LogProbability);
    }

    [Fact]
    public void Beam_width_one_is_greedy_on_the_trap()
    {
        var greedy = SequenceDecoding.Greedy(new ToyScorer(1, 5, 5, 1, GreedyTrap), Bos, Eos, Banned)[0];
        var beam = SequenceDecoding.BeamSearch(new ToyScorer(1, 5, 5, 1, GreedyTrap), 1, new BeamSearchOptions { Width = 1 }, Bos, Eos, Banned)[0];
        Assert.Equal(greedy.Tokens, beam.Tokens);
        Assert.Equal(greedy.LogProbability, beam.LogProbability, 12);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Beam_width_one_is_greedy_on_random_scorers(int seed)
    {
        // Pseudo-random distributions over 6 ids fixed by (seed, source, history).
        double[] Next(int source, IReadOnlyList<int> history)
        {
            var random = new Random(HashCode.Combine(seed, source, string.Join(',', history)));
            var p = Enumerable.Range(0, 6).Select(_ => random.NextDouble() + 0.05).ToArray();
            p[Eos] *= history.Count / 3.0; // longer histories end more often
            var sum = p.Sum();
            return [.. p.Select(x => x / sum)];
        }
        const int sources = 4;
        var greedy = SequenceDecoding.Greedy(new ToyScorer(sources, 6, 7, 1, Next), Bos, Eos, Banned);
        var beam = SequenceDecoding.BeamSearch(new ToyScorer(sources, 6, 7, 1, Next), sources, new BeamSearchOptions { Width = 1 }, Bos, Eos, Banned);
        for (var s = 0; s < sources; s++)
        {
            Assert.Equal(greedy[s].Tokens, beam[s].Tokens);
            Assert.Equal(greedy[s].LogProbability, beam[s].LogProbability, 12);
            Assert.Equal(greedy[s].Finished, beam[s].Finished);
            Assert.DoesNotContain(Pad, beam[s].Tokens);
            Assert.DoesNotContain(Bos, beam[s].Tokens);
        }
    }

    [Fact]
    public void Beam_search_does_not_stop_when_unlikely_hypotheses_finish_first()
    {
        // After <bos>: a 0.9, b 0.05, c 0.05; after a: a 0.98, eos 0.01, b 0.01; after b or c: eos 0.9.
        // Step 2 finishes "b" (0.045) and "a" (0.009) — two hypotheses for width 2 — while "a a"
        // (0.882, then eos) is still live and far better: the search must go on.
        static double[] Table(int source, IReadOnlyList<int> history) => history switch
        {
            [] => [0, 0, 0, 0.9, 0.05, 0.05],
            [A] => [0, 0, 0.01, 0.98, 0.01, 0],
            [B] or [5] => [0, 0, 0.9, 0.05, 0.05, 0],
            _ => [0, 0, 1, 0, 0, 0],
        };
        var beam = SequenceDecoding.BeamSearch(new ToyScorer(2, 6, 5, 2, Table), 1, new BeamSearchOptions { Width = 2, LengthPenalty = 0 }, Bos, Eos, Banned)[0];
        Assert.Equal([A, A], beam.Tokens);
        Assert.Equal(Math.Log(0.882), beam.LogProbability, 12);
        var greedy = SequenceDecoding.Greedy(new ToyScorer(1, 6, 5, 1, Table), Bos, Eos, Banned)[0];
        Assert.Equal(greedy.Tokens, beam.Tokens);
    }

    [Fact]
    public void Length_penalty_changes_the_winner_as_computed_by_hand()
    {
        // Finished: [] with log 0.4 (1 token: eos) and [a] with log 0.36 (2 tokens).
        var none = SequenceDecoding.BeamSearch(new ToyScorer(2, 5, 5, 2, ShortOrLong), 1, new BeamSearchOptions { Width = 2, LengthPenalty = 0 }, Bos, Eos, Banned)[0];
        Assert.Empty(none.Tokens);
        Assert.Equal(Math.Log(0.4), none.Score, 12);

        var options = new BeamSearchOptions { Width = 2, LengthPenalty = 1 };
        var penalised = SequenceDecoding.BeamSearch(new ToyScorer(2, 5, 5, 2, ShortOrLong), 1, options, Bos, Eos, Banned)[0];
        Assert.Equal([A], penalised.Tokens);
        Assert.Equal(Math.Log(0.36), penalised.LogProbability, 12);
        Assert.Equal(Math.Log(0.36) / (7.0 / 6.0), penalised.Score, 12);
        Assert.Equal(-1.2 / Math.Pow(8.0 / 6.0, 0.6), new BeamSearchOptions().Score(-1.2, 3), 12);
    }

    [Fact]
    public void Batched_beam_search_gives_each_source_its_own_answer()
    {
        // Source 0 is the trap, source 1 the short-or-long table, source 2 the trap again.
        double[] Mixed(int source, IReadOnlyList<int> history) => source == 1 ? ShortOrLong(source, history) : GreedyTrap(source, history);
        var options = new BeamSearchOptions { Width = 2, LengthPenalty = 0 };
        var batch = SequenceDecoding.BeamSearch(new ToyScorer(6, 5, 5, 2, Mixed), 3, options, Bos, Eos, Banned);
        Assert.Equal([B], batch[0].Tokens);
        Assert.Empty(batch[1].Tokens);
        Assert.Equal([B], batch[2].Tokens);
    }

    [Fact]
    public void Decoding_stops_at_the_step_limit_when_eos_never_comes()
    {
        static double[] Never(int source, IReadOnlyList<int> history) => [0, 0, 0, 0.7, 0.3];
        var scorer = new ToyScorer(1, 5, 4, 1, Never);
        var greedy = SequenceDecoding.Greedy(scorer, Bos, Eos, Banned)[0];
        Assert.Equal([A, A, A, A], greedy.Tokens);
        Assert.False(greedy.Finished);
        Assert.Equal(4, scorer.Steps);

        var beam = SequenceDecoding.BeamSearch(new ToyScorer(3, 5, 4, 3, Never), 1, new BeamSearchOptions { Width = 3, LengthPenalty = 0 }, Bos, Eos, Banned)[0];
        Assert.Equal([A, A, A, A], beam.Tokens);
        Assert.False(beam.Finished);
        Assert.Equal(4 * Math.Log(0.7), beam.LogProbability, 12);
    }

    [Fact]
    public void Beam_search_refuses_a_scorer_with_the_wrong_number_of_rows()
    {
        var error = Assert.Throws<ArgumentException>(() => SequenceDecoding.BeamSearch(new ToyScorer(3, 5, 5, 1, GreedyTrap), 2, new BeamSearchOptions { Width = 2 }, Bos, Eos));
        Assert.Contains("needs 4 scorer rows", error.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => new BeamSearchOptions { Width = 0 }.Validate());
        Assert.Throws<ArgumentOutOfRangeException>(() => new BeamSearchOptions { LengthPenalty = -1 }.Validate());
    }
}
