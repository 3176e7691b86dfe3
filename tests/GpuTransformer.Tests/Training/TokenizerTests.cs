using Microsoft.ML.Tokenizers;

namespace GpuTransformer.Tests.Training;

public sealed class TokenizerTests
{
    private static readonly string[] Fixture = Directory.GetFiles(Fixtures.SotuMini, "*.txt").Order(StringComparer.Ordinal).Select(File.ReadAllText).ToArray();

    [Fact]
    public void Byte_tokenizer_round_trips_any_text_exactly()
    {
        var tokenizer = new ByteTokenizer();
        const string text = "Fellow-Citizens:\n\tnaïve café — ∑ 😀 \r\n end";
        var ids = tokenizer.Encode(text);
        Assert.Equal(System.Text.Encoding.UTF8.GetByteCount(text), ids.Length);
        Assert.All(ids, id => Assert.InRange(id, 0, 255));
        Assert.Equal(text, tokenizer.Decode(ids));
        Assert.Equal(259, tokenizer.VocabularySize);
        Assert.Equal(new SpecialTokenIds(256, 257, 258, null), tokenizer.Specials);
        // Specials are dropped on decode: a generated sequence decodes to its text.
        Assert.Equal("ab", tokenizer.Decode([257, 'a', 256, 'b', 258]));
        Assert.Throws<ArgumentOutOfRangeException>(() => tokenizer.Decode([259]));
    }

    [Fact]
    public void Word_tokenizer_maps_rare_words_to_unk_and_lines_to_eos()
    {
        var tokenizer = WordTokenizer.Train(["a a b\nc a\n", "d d"], minFrequency: 2);
        Assert.Equal(["<pad>", "<bos>", "<eos>", "<unk>", "a", "d"], tokenizer.Tokens);
        const int a = 4, eos = 2, unk = 3;
        Assert.Equal([a, unk, eos, eos, unk, a, eos], tokenizer.Encode("a b\n\nz   a"));
        Assert.Equal("a <unk>\n\n<unk> a\n", tokenizer.Decode(tokenizer.Encode("a b\n\nz   a")));
        // WikiText writes unknown words as a literal <unk>: it maps to the special id.
        Assert.Equal([unk, a, eos], tokenizer.Encode("<unk> a\n"));
        Assert.Equal([unk, unk, eos], tokenizer.Encode("<eos> <pad>"));
    }

    [Fact]
    public void Word_tokenizer_round_trips_normalised_text_when_every_word_is_known()
    {
        var text = string.Join("\n", Fixture.Select(t => string.Join(' ', t.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)))) + "\n";
        var tokenizer = WordTokenizer.Train([text]);
        var ids = tokenizer.Encode(text);
        Assert.DoesNotContain(3, ids);
        Assert.Equal(text, tokenizer.Decode(ids));
    }

    [Fact]
    public void Word_vocabulary_is_ordered_by_frequency_then_ordinally_and_capped()
    {
        var tokenizer = WordTokenizer.Train(["c c c b b a a x"], minFrequency: 1, maxVocabulary: 7);
        Assert.Equal(["<pad>", "<bos>", "<eos>", "<unk>", "c", "a", "b"], tokenizer.Tokens);
        Assert.Equal(7, tokenizer.VocabularySize);
    }

    [Fact]
    public void Bpe_compaction_keeps_only_seen_cl100k_ids_and_maps_back_exactly()
    {
        var tokenizer = CompactBpeTokenizer.Train(Fixture);
        var cl100k = TiktokenTokenizer.CreateForEncoding("cl100k_base");
        var seen = Fixture.SelectMany(t => cl100k.EncodeToIds(t)).Distinct().Order().ToArray();
        Assert.Equal(seen, tokenizer.BaseIds);
        Assert.Equal(4 + seen.Length, tokenizer.VocabularySize);

        foreach (var text in Fixture)
        {
            var ids = tokenizer.Encode(text);
            Assert.Equal(cl100k.EncodeToIds(text), ids.Select(id => tokenizer.BaseIds[id - 4]));
            Assert.Equal(text, tokenizer.Decode(ids));
        }

        var unseen = tokenizer.Encode("Fellow zyzzyvas");
        Assert.Contains(tokenizer.Specials.Unk!.Value, unseen);
        Assert.StartsWith("Fellow", tokenizer.Decode(unseen));
        Assert.Contains("<unk>", tokenizer.Decode(unseen));
        Assert.Equal(" the", tokenizer.TokenText(tokenizer.Encode("Fellow the")[^1]));
    }

    [Theory]
    [InlineData("byte")]
    [InlineData("word")]
    [InlineData("bpe")]
    public void Saved_and_loaded_tokenizer_is_the_same(string kind)
    {
        var original = TokenizerFactory.Create(kind, Fixture);
        using var folder = new TempFolder();
        var path = Path.Combine(folder.Path, "tokenizer.json");
        TokenizerFactory.Save(original, path);
        var loaded = TokenizerFactory.Load(path);
        var fromString = TokenizerFactory.FromJson(TokenizerFactory.ToJson(original));

        foreach (var copy in new[] { loaded, fromString })
        {
            Assert.Equal(original.Name, copy.Name);
            Assert.Equal(original.VocabularySize, copy.VocabularySize);
            Assert.Equal(original.Specials, copy.Specials);
            Assert.Equal(TokenizerFactory.Fingerprint(original), TokenizerFactory.Fingerprint(copy));
            Assert.Equal(original.Encode(Fixture[3]), copy.Encode(Fixture[3]));
            TokenizerFactory.EnsureSame(original, copy);
        }
    }

    [Fact]
    public void Mismatched_tokenizers_are_refused_with_a_message_naming_both()
    {
        var word = TokenizerFactory.Create("word", Fixture);
        var otherWord = TokenizerFactory.Create("word", Fixture.Take(5));
        var bytes = TokenizerFactory.Create("byte", Fixture);

        Assert.False(TokenizerFactory.AreSame(word, otherWord));
        var error = Assert.Throws<TokenizerMismatchException>(() => TokenizerFactory.EnsureSame(word, otherWord));
        Assert.Contains($"vocabulary {word.VocabularySize:N0}", error.Message);
        Assert.Contains($"vocabulary {otherWord.VocabularySize:N0}", error.Message);

        var kindError = Assert.Throws<TokenizerMismatchException>(() => TokenizerFactory.EnsureSame(bytes, word));
        Assert.Contains("byte", kindError.Message);
        Assert.Contains("a different kind", kindError.Message);
    }

    [Fact]
    public void Bad_descriptions_and_kinds_are_clear_errors()
    {
        Assert.Throws<FormatException>(() => TokenizerFactory.FromJson("{ not json"));
        Assert.Contains("Unknown tokenizer kind 'sentencepiece'", Assert.Throws<FormatException>(() => TokenizerFactory.FromJson("""{"kind":"sentencepiece","version":1}""")).Message);
        Assert.Contains("version 2", Assert.Throws<FormatException>(() => TokenizerFactory.FromJson("""{"kind":"byte","version":2}""")).Message);
        Assert.Throws<FormatException>(() => TokenizerFactory.FromJson("""{"kind":"word","version":1,"min_frequency":1,"max_vocabulary":9,"tokens":["<pad>","<bos>","<eos>","<unk>","a","a"]}"""));
        Assert.Contains("Known tokenizers: byte, word, bpe-cl100k", Assert.Throws<ArgumentException>(() => TokenizerFactory.ParseKind("spm")).Message);
    }

    [Fact]
    public void Token_streams_separate_documents_with_eos()
    {
        var tokenizer = new ByteTokenizer();
        var stream = TokenizedCorpus.Encode(tokenizer, [new TextDocument("a", "hi"), new TextDocument("b", "yo")]);
        Assert.Equal(['h', 'i', 258, 'y', 'o', 258], stream);
    }
}
