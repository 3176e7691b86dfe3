using System.Text.Json;

namespace GpuTransformer.Training.Tasks;

/// <summary>
/// A fixed vocabulary of a generated task: id 0 <c>&lt;pad&gt;</c>, 1 <c>&lt;bos&gt;</c>, 2 <c>&lt;eos&gt;</c>, then
/// the task's tokens in order. Source and target vocabularies of a task share the special ids,
/// as the encoder–decoder's single pad_id requires.
/// </summary>
public sealed class TaskVocabulary
{
    /// <summary>&lt;pad&gt;.</summary>
    public const int Pad = 0;

    /// <summary>&lt;bos&gt;.</summary>
    public const int Bos = 1;

    /// <summary>&lt;eos&gt;.</summary>
    public const int Eos = 2;

    private readonly string[] tokens;
    private readonly Dictionary<string, int> ids;

    /// <exception cref="ArgumentException">A repeated or special-looking token.</exception>
    public TaskVocabulary(IEnumerable<string> tokens)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        this.tokens = ["<pad>", "<bos>", "<eos>", .. tokens];
        ids = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < this.tokens.Length; i++)
        {
            if (!ids.TryAdd(this.tokens[i], i))
                throw new ArgumentException($"Token '{this.tokens[i]}' appears twice in the vocabulary.", nameof(tokens));
        }
    }

    /// <summary>Number of ids, specials included.</summary>
    public int Size => tokens.Length;

    /// <summary>Every token by id.</summary>
    public IReadOnlyList<string> Tokens => tokens;

    /// <summary>The id of <paramref name="token"/>.</summary>
    /// <exception cref="ArgumentException">Not in the vocabulary.</exception>
    public int Id(string token) => ids.TryGetValue(token, out var id)
        ? id
        : throw new ArgumentException($"'{token}' is not in the vocabulary ({string.Join(' ', tokens.Skip(3))}).", nameof(token));

    /// <summary>The ids of <paramref name="sequence"/>.</summary>
    public int[] Encode(IEnumerable<string> sequence) => [.. sequence.Select(Id)];

    /// <summary>The tokens of <paramref name="sequence"/> (specials dropped).</summary>
    public IReadOnlyList<string> Decode(IEnumerable<int> sequence) =>
        [.. sequence.Where(id => id > Eos).Select(id => (uint)id < (uint)tokens.Length ? tokens[id] : throw new ArgumentOutOfRangeException(nameof(sequence), id, $"Id {id} is outside the vocabulary of {tokens.Length}."))];

    /// <summary>The token list as a JSON array (specials included), for checkpoints.</summary>
    public string ToJson() => JsonSerializer.Serialize(tokens);

    /// <summary>Whether <paramref name="json"/> (from <see cref="ToJson"/>) lists exactly these tokens.</summary>
    public bool Matches(string json)
    {
        try
        {
            return JsonSerializer.Deserialize<string[]>(json) is { } stored && stored.SequenceEqual(tokens);
        }
        catch (JsonException)
        {
            return false;
        }
    }
}
