using System.Text.RegularExpressions;
using GpuTransformer.Reporting;
using GpuTransformer.Training.Scoring;

namespace GpuTransformer.Tests.Scoring;

/// <summary>
/// The <c>score --html</c> page in a real browser: headless Chromium loads the file with a
/// fragment that selects a text, a position, an attention map and a head (the page's own
/// selection path), and the DOM it dumps after the script ran must show no script error and
/// exactly the numbers the API returned — the summary, every position's row, the selected
/// position's top-k distribution and the selected head's attention weights — to the precision
/// shown. Then a screenshot (kept in the test output folder, <c>screenshots/score-page.png</c>).
/// PoCL when present, else the CPU simulator.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed partial class ScorePageBrowserTests(Devices devices, ITestOutputHelper output)
{
    private static readonly LanguageModelConfig Config = new()
    {
        DModel = 16, NHead = 2, NumLayers = 2, DimFeedforward = 32, VocabularySize = 259, MaxSequenceLength = 32, PadId = 256,
    };

    [ChromiumFact]
    public void The_page_renders_without_script_errors_and_shows_the_numbers_the_API_returned()
    {
        const int text = 1, position = 6, mapIndex = 1, head = 1;
        var backend = Devices.Available.Contains("opencl") ? "opencl" : "cpu";
        using var model = new LanguageModel(devices.Get(backend), Config, seed: 9);
        var scorer = new LanguageModelScorer(model, new ByteTokenizer());
        var scores = scorer.Score(["The state of the Union", "The Union of <the> state"], new ScoringOptions { TopK = 5 });
        var pages = scores.Select((s, i) => new ScorePageText(s, scorer.Attention(s), $"text {i + 1}", scorer.TokenText(s.Ids[0]))).ToList();
        using var folder = new TempFolder();
        var path = Path.Combine(folder.Path, "score.html");
        ScorePage.Write(path, "score test", "a tiny random model", pages);
        var url = new Uri(path).AbsoluteUri + $"#text={text}&pos={position}&map={mapIndex}&head={head}";

        var dom = Chromium(folder.Path, "--dump-dom", url);
        var root = Regex.Match(dom, "<html[^>]*>").Value;
        Assert.DoesNotContain("data-errors", root);
        Assert.Contains("data-ready=\"1\"", root);
        Assert.Equal(2, Regex.Count(Element(dom, "select", "texts"), "<option"));

        var score = scores[text];
        AssertShows(Element(dom, "b", "total"), score.TotalLogProbability);
        AssertShows(Element(dom, "b", "mean"), score.MeanLogProbability);
        AssertShows(Element(dom, "b", "perplexity"), score.Perplexity);
        AssertShows(Element(dom, "b", "bits-per-byte"), score.BitsPerByte!.Value);
        AssertShows(Element(dom, "b", "bits-per-char"), score.BitsPerCharacter!.Value);

        var rows = PositionRow().Matches(dom);
        Assert.Equal(score.Tokens.Count, rows.Count);
        foreach (Match row in rows)
        {
            var token = score.Tokens[int.Parse(row.Groups[1].Value, CultureInfo.InvariantCulture)];
            var cells = Cell().Matches(row.Groups[2].Value).Select(m => m.Groups[1].Value).ToList();
            Assert.Equal(7, cells.Count);
            Assert.Equal(token.Position.ToString(CultureInfo.InvariantCulture), cells[0]);
            AssertShows(cells[2], token.Probability);
            AssertShows(cells[3], token.LogProbability);
            Assert.Equal(token.Rank.ToString(CultureInfo.InvariantCulture), cells[4]);
            AssertShows(cells[5], token.Entropy);
        }

        var selected = score.Tokens[position];
        var candidates = Candidate().Matches(dom);
        Assert.Equal(selected.TopK.Count + (selected.Rank > selected.TopK.Count ? 1 : 0), candidates.Count);
        for (var i = 0; i < selected.TopK.Count; i++)
        {
            Assert.Equal(selected.TopK[i].Id == selected.Id, candidates[i].Groups[1].Success);
            AssertShows(candidates[i].Groups[2].Value, selected.TopK[i].Probability);
        }
        if (selected.Rank > selected.TopK.Count)
            AssertShows(candidates[^1].Groups[2].Value, selected.Probability);

        // The selected head of the selected map, at the query that predicted the selected token; weights travel rounded to 4 decimals.
        var map = pages[text].Attention[mapIndex];
        var attends = Attends().Matches(dom);
        Assert.Equal(5, attends.Count);
        var listed = attends.Select(m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture)).ToList();
        foreach (Match item in attends)
            AssertShows(item.Groups[2].Value, map[head, position, int.Parse(item.Groups[1].Value, CultureInfo.InvariantCulture)], 5e-5);
        var unlisted = Enumerable.Range(0, map.Keys).Where(k => !listed.Contains(k)).Select(k => map[head, position, k]).DefaultIfEmpty(0f).Max();
        Assert.All(listed, k => Assert.True(map[head, position, k] >= unlisted - 1e-3, $"key {k} is listed but a stronger one is not"));

        var screenshot = Path.Combine(AppContext.BaseDirectory, "screenshots", "score-page.png");
        Directory.CreateDirectory(Path.GetDirectoryName(screenshot)!);
        File.Delete(screenshot);
        Chromium(folder.Path, $"--screenshot={screenshot}", "--window-size=1280,1400", "--hide-scrollbars", url);
        var (width, height) = Fixtures.PngSize(screenshot);
        Assert.Equal((1280, 1400), (width, height));
        output.WriteLine($"Screenshot: {screenshot}");
    }

    /// <summary>Runs headless Chromium with a fresh profile and no network features; returns stdout.</summary>
    private static string Chromium(string folder, params string[] arguments)
    {
        var profile = Directory.CreateTempSubdirectory("gt-chromium-").FullName;
        try
        {
            string[] flags =
            [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", $"--user-data-dir={profile}",
            ];
            var start = new ProcessStartInfo(ChromiumFactAttribute.Path, [.. flags, .. arguments])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                WorkingDirectory = folder,
            };
            using var process = Process.Start(start)!;
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(180_000))
            {
                process.Kill(entireProcessTree: true);
                Assert.Fail($"Chromium did not finish in 3 minutes: {string.Join(' ', arguments)}");
            }
            Assert.True(process.ExitCode == 0, $"Chromium exited with {process.ExitCode}: {stderr.Result}");
            return stdout.Result;
        }
        finally
        {
            Directory.Delete(profile, recursive: true);
        }
    }

    /// <summary>The inner HTML of the element <c>&lt;tag id="id"&gt;</c>.</summary>
    private static string Element(string dom, string tag, string id)
    {
        var match = Regex.Match(dom, $"<{tag} id=\"{id}\"[^>]*>(.*?)</{tag}>", RegexOptions.Singleline);
        Assert.True(match.Success, $"no <{tag} id=\"{id}\"> in the page");
        return match.Groups[1].Value;
    }

    /// <summary>Asserts <paramref name="shown"/> is <paramref name="value"/> to the precision it is shown with (fixed or exponent form), plus <paramref name="slack"/>.</summary>
    private static void AssertShows(string shown, double value, double slack = 0)
    {
        var parsed = double.Parse(shown, NumberStyles.Float, CultureInfo.InvariantCulture);
        var exponent = shown.IndexOfAny(['e', 'E']);
        var mantissa = exponent < 0 ? shown : shown[..exponent];
        var decimals = mantissa.Contains('.', StringComparison.Ordinal) ? mantissa.Length - mantissa.IndexOf('.', StringComparison.Ordinal) - 1 : 0;
        var unit = Math.Pow(10, -decimals) * (exponent < 0 ? 1 : Math.Pow(10, int.Parse(shown[(exponent + 1)..], CultureInfo.InvariantCulture)));
        Assert.True(Math.Abs(parsed - value) <= (0.5 * unit) + slack + 1e-12, $"the page shows {shown} for {value.ToString("R", CultureInfo.InvariantCulture)}");
    }

    [GeneratedRegex("<tr class=\"position-row[^\"]*\" data-pos=\"(\\d+)\">(.*?)</tr>", RegexOptions.Singleline)]
    private static partial Regex PositionRow();

    [GeneratedRegex("<td[^>]*>(.*?)</td>", RegexOptions.Singleline)]
    private static partial Regex Cell();

    [GeneratedRegex("<tr class=\"candidate( actual)?\">.*?<td class=\"p\">([^<]*)</td>.*?</tr>", RegexOptions.Singleline)]
    private static partial Regex Candidate();

    [GeneratedRegex("<li class=\"attends\" data-key=\"(\\d+)\">.*?<b class=\"weight\">([^<]*)</b>", RegexOptions.Singleline)]
    private static partial Regex Attends();
}
