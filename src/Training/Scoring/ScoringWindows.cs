using System.Globalization;

namespace GpuTransformer.Training.Scoring;

/// <summary>
/// One forward of a (sliding-window) scoring: the model reads <c>sequence[Start .. Start + Length)</c>
/// and its logits at window position p predict <c>sequence[Start + p + 1]</c>; of those, the tokens
/// <see cref="FirstTarget"/> … <see cref="LastTarget"/> are scored here (the earlier ones were
/// scored by the previous window, with less context). Indices are into the whole sequence, whose
/// token 0 (the separator, or the text's first token) is context only.
/// </summary>
internal readonly record struct ScoringWindow(int Start, int Length, int FirstTarget)
{
    /// <summary>The last token this window scores: the one after its last input position.</summary>
    public int LastTarget => Start + Length;

    /// <summary>Tokens the model sees before scoring <paramref name="target"/> in this window (including the token right before it).</summary>
    public int ContextOf(int target) => target - Start;
}

/// <summary>
/// How a sequence longer than the window is scored, as in Hugging Face's "perplexity of
/// fixed-length models": windows of W tokens start every S tokens (S = stride); each scores only
/// the tokens the previous window did not reach, so every token is scored exactly once; the last
/// window is moved back to end at the sequence's end so its tokens keep a full window of context.
/// A token scored by a later window sees at least W − S + 1 tokens before it. With S = W the
/// windows do not overlap (the cheapest, least context); S = 1 gives every token W tokens of
/// context at one forward per token. A sequence whose targets fit in one window is one forward.
/// </summary>
internal static class ScoringWindows
{
    /// <summary>The windows for a sequence of <paramref name="length"/> tokens (token 0 is context; tokens 1 … length − 1 are scored).</summary>
    /// <exception cref="ArgumentOutOfRangeException">Fewer than 2 tokens, a window below 1, or a stride outside 1 … window.</exception>
    public static IReadOnlyList<ScoringWindow> Plan(int length, int window, int stride)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(length, 2);
        ArgumentOutOfRangeException.ThrowIfLessThan(window, 1);
        if (stride < 1 || stride > window)
            throw new ArgumentOutOfRangeException(nameof(stride), stride, string.Create(CultureInfo.InvariantCulture, $"The stride must be between 1 and the window ({window})."));
        var targets = length - 1;
        var windows = new List<ScoringWindow>();
        var scored = 0;                                    // targets 1 … scored are done
        for (var start = 0; ; start += stride)
        {
            if (start + window >= targets)
            {
                // The last window ends at the last target, reaching back a full window where the sequence allows.
                var last = Math.Max(0, targets - window);
                windows.Add(new ScoringWindow(last, targets - last, scored + 1));
                return windows;
            }
            windows.Add(new ScoringWindow(start, window, scored + 1));
            scored = start + window;
        }
    }
}
