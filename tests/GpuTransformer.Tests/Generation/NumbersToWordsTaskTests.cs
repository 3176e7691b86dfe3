using GpuTransformer.Training.Tasks;

namespace GpuTransformer.Tests.Generation;

/// <summary>The number-to-words function on hand cases and the task generator's promises (no device).</summary>
public sealed class NumbersToWordsTaskTests
{
    [Theory]
    [InlineData(0, "zero")]
    [InlineData(7, "seven")]
    [InlineData(13, "thirteen")]
    [InlineData(20, "twenty")]
    [InlineData(21, "twenty one")]
    [InlineData(100, "one hundred")]
    [InlineData(105, "one hundred five")]
    [InlineData(110, "one hundred ten")]
    [InlineData(999, "nine hundred ninety nine")]
    [InlineData(1000, "one thousand")]
    [InlineData(1010, "one thousand ten")]
    [InlineData(4072, "four thousand seventy two")]
    [InlineData(12345, "twelve thousand three hundred forty five")]
    [InlineData(900000, "nine hundred thousand")]
    [InlineData(1000000, "one million")]
    [InlineData(1002003, "one million two thousand three")]
    [InlineData(40000019, "forty million nineteen")]
    [InlineData(999_999_999_999, "nine hundred ninety nine billion nine hundred ninety nine million nine hundred ninety nine thousand nine hundred ninety nine")]
    public void Numbers_are_spelled_as_written_by_hand_and_parse_back(long number, string words)
    {
        Assert.Equal(words, NumberWords.ToText(number));
        Assert.Equal(number, NumberWords.Parse(words));
    }

    [Fact]
    public void Every_number_up_to_twenty_thousand_and_a_sample_beyond_round_trips()
    {
        var random = new Random(5);
        var numbers = Enumerable.Range(0, 20_000).Select(n => (long)n)
            .Concat(Enumerable.Range(0, 2_000).Select(_ => random.NextInt64(NumberWords.Limit)));
        var spellings = new HashSet<string>();
        foreach (var n in numbers)
        {
            var text = NumberWords.ToText(n);
            Assert.Equal(n, NumberWords.Parse(text));
            Assert.All(NumberWords.ToWords(n), w => Assert.Contains(w, NumberWords.Vocabulary));
            spellings.Add(text);
        }
        Assert.True(spellings.Count >= 21_990, "distinct numbers have distinct spellings");
    }

    [Theory]
    [InlineData("")]
    [InlineData("thousand")]
    [InlineData("one one")]
    [InlineData("twenty ten")]
    [InlineData("one hundred and five")]
    [InlineData("zero zero")]
    [InlineData("one thousand one thousand")]
    [InlineData("ten hundred")]
    [InlineData("one trillion")]
    public void Non_canonical_spellings_are_refused(string words)
    {
        Assert.Throws<FormatException>(() => NumberWords.Parse(words));
    }

    [Fact]
    public void Out_of_range_numbers_are_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => NumberWords.ToWords(-1));
        Assert.Throws<ArgumentOutOfRangeException>(() => NumberWords.ToWords(NumberWords.Limit));
    }

    [Fact]
    public void The_task_is_deterministic_from_its_seed()
    {
        var a = new NumbersToWordsTask(new NumbersToWordsOptions { Seed = 9 });
        var b = new NumbersToWordsTask(new NumbersToWordsOptions { Seed = 9 });
        var c = new NumbersToWordsTask(new NumbersToWordsOptions { Seed = 10 });
        Assert.Equal(a.TrainingNumbers(17, 32), b.TrainingNumbers(17, 32));
        Assert.Equal(a.EvaluationNumbers, b.EvaluationNumbers);
        Assert.NotEqual(a.TrainingNumbers(17, 32), a.TrainingNumbers(18, 32));
        Assert.NotEqual(a.TrainingNumbers(17, 32), c.TrainingNumbers(17, 32));
        Assert.NotEqual(a.EvaluationNumbers, c.EvaluationNumbers);
        var batch = a.TrainingBatch(3, 8);
        var again = b.TrainingBatch(3, 8);
        Assert.Equal(batch.Source, again.Source);
        Assert.Equal(batch.TargetOutput, again.TargetOutput);
    }

    [Fact]
    public void Held_out_numbers_are_never_drawn_for_training()
    {
        var task = new NumbersToWordsTask();
        var evaluation = task.EvaluationNumbers;
        Assert.Equal(500, evaluation.Count);
        Assert.Equal(evaluation.Count, evaluation.Distinct().Count());
        Assert.All(evaluation, n => Assert.True(task.IsHeldOut(n), $"{n} is in the evaluation set but not held out"));
        Assert.All(evaluation, n => Assert.InRange(n, 0, task.Limit - 1));

        var drawn = Enumerable.Range(0, 300).SelectMany(step => task.TrainingNumbers(step, 64)).ToList();
        var trained = drawn.ToHashSet();
        Assert.DoesNotContain(trained, task.IsHeldOut);
        Assert.Empty(trained.Intersect(evaluation));
        // Every digit count 1…6 is drawn about equally often (uniform length first).
        var byDigits = drawn.GroupBy(n => n.ToString(System.Globalization.CultureInfo.InvariantCulture).Length).ToDictionary(g => g.Key, g => g.Count());
        Assert.Equal(6, byDigits.Count);
        Assert.All(byDigits.Values, count => Assert.InRange(count, 2_900, 3_500)); // 19,200 / 6 = 3,200 ± 5 σ
        Assert.Equal(Enumerable.Range(0, 10).Count(n => !task.IsHeldOut(n)), trained.Count(n => n < 10));

        // About 10 % of all numbers are held out.
        var heldOut = Enumerable.Range(0, 100_000).Count(n => task.IsHeldOut(n));
        Assert.InRange(heldOut, 9_500, 10_500);
    }

    [Fact]
    public void Small_number_spaces_evaluate_at_most_every_held_out_number()
    {
        var task = new NumbersToWordsTask(new NumbersToWordsOptions { MaxDigits = 2 });
        var heldOut = Enumerable.Range(0, 100).Where(n => task.IsHeldOut(n)).Select(n => (long)n).ToHashSet();
        Assert.Equal(heldOut.Order(), task.EvaluationNumbers.Order());
    }

    [Fact]
    public void Sources_and_targets_are_encoded_with_shared_specials()
    {
        var task = new NumbersToWordsTask();
        Assert.Equal(13, task.Source.Size);
        Assert.Equal(3 + NumberWords.Vocabulary.Count, task.Target.Size);
        Assert.Equal(new[] { 3 + 4, 3 + 0, 3 + 7, 3 + 2 }, task.EncodeSource("4072"));
        Assert.Equal(task.EncodeSource(4072), task.EncodeSource(" 4072 "));
        Assert.Equal("four thousand seventy two", task.DecodeTarget(task.EncodeTarget(4072)));
        Assert.Equal("four thousand", task.DecodeTarget([TaskVocabulary.Bos, .. task.EncodeTarget(4000), TaskVocabulary.Eos, TaskVocabulary.Pad]));
        Assert.Equal(9, task.MaxTargetLength); // 777777: seven hundred seventy seven thousand seven hundred seventy seven
        Assert.All(task.TrainingNumbers(0, 256), n => Assert.InRange(task.EncodeTarget(n).Length, 1, task.MaxTargetLength));

        var batch = task.TrainingBatch(0, 4);
        Assert.All(Enumerable.Range(0, 4), b => Assert.Equal(TaskVocabulary.Bos, batch.TargetInput[b * batch.TargetLength]));
        Assert.Contains(TaskVocabulary.Eos, batch.TargetOutput);
    }

    [Theory]
    [InlineData("")]
    [InlineData("12a")]
    [InlineData("-5")]
    [InlineData("0042")]
    [InlineData("1234567")]
    [InlineData("4 072")]
    public void Bad_inputs_are_refused_with_a_message(string input)
    {
        var task = new NumbersToWordsTask();
        var error = Assert.Throws<ArgumentException>(() => task.EncodeSource(input));
        Assert.Contains($"'{input}'", error.Message);
    }

    [Fact]
    public void Options_round_trip_through_json_and_are_validated()
    {
        var options = new NumbersToWordsOptions { MaxDigits = 4, Seed = 77, HeldOutPercent = 20, EvaluationSize = 100 };
        Assert.Equal(options, NumbersToWordsOptions.FromJson(options.ToJson()));
        Assert.Throws<FormatException>(() => NumbersToWordsOptions.FromJson("""{"max_digits": 13}"""));
        Assert.Throws<FormatException>(() => NumbersToWordsOptions.FromJson("not json"));
        Assert.Throws<ArgumentOutOfRangeException>(() => new NumbersToWordsTask(new NumbersToWordsOptions { HeldOutPercent = 0 }));
    }
}
