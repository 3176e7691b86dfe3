using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using GpuTransformer.Training.Inspection;
using GpuTransformer.Training.Scoring;

namespace GpuTransformer.Reporting;

/// <summary>One text on the <see cref="ScorePage"/>: its score, the attention of the forward that scored it, and labels.</summary>
/// <param name="Score">The score.</param>
/// <param name="Attention">Every attention map of that forward (<see cref="LanguageModelScorer.Attention"/> or <see cref="TranslationScorer.Attention"/>).</param>
/// <param name="Title">The text's name in the page's selector.</param>
/// <param name="Context">The text of token 0, which every scored token follows (the separator, or &lt;bos&gt;).</param>
public sealed record ScorePageText(SequenceScore Score, IReadOnlyList<AttentionMap> Attention, string Title, string Context);

/// <summary>
/// The <c>score --html</c> page: one self-contained HTML file (inline CSS and script, the data as
/// JSON inside it; no network, nothing external) showing, per text, the tokens coloured by the
/// probability the model gave each (click or hover one), the next-token distribution at the
/// selected position (top-k bars, the actual token marked), the attention of every layer and head
/// of the forward that scored it (bertviz-style lines from the selected query to the keys it
/// attends to; a query row j is the position whose logits predicted scored token j), and a table of
/// every position. The URL fragment selects the initial view:
/// <c>#text=0&amp;pos=3&amp;map=1&amp;head=0</c> (text, scored token, attention map, head or <c>all</c>).
/// <para>
/// Elements a test can read after the script ran: <c>html[data-ready]</c>, <c>html[data-errors]</c>
/// (every script error, from a handler installed before the main script), the summary ids
/// (<c>total</c>, <c>mean</c>, <c>perplexity</c>, <c>bits-per-byte</c>, <c>bits-per-char</c>),
/// <c>.position-row</c> rows, <c>.candidate</c> rows of the distribution and <c>.attends</c> items.
/// Probabilities show with 4 decimals (in exponent form below 0.001), log-probabilities and
/// entropies with 3, attention weights with 3.
/// </para>
/// </summary>
public static partial class ScorePage
{
    /// <summary>Writes the page for <paramref name="texts"/> to <paramref name="path"/> (folder created).</summary>
    /// <param name="path">The HTML file.</param>
    /// <param name="title">The page's heading.</param>
    /// <param name="model">A line describing the model.</param>
    /// <param name="texts">The texts, one page view each.</param>
    /// <param name="separator">What goes between tokens when the page writes a context out: "" for bytes and BPE pieces (they carry their spaces), " " for words.</param>
    public static void Write(string path, string title, string model, IReadOnlyList<ScorePageText> texts, string separator = "")
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(title);
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(texts);
        if (texts.Count == 0)
            throw new ArgumentException("No texts to show.", nameof(texts));
        var data = new JsonObject
        {
            ["title"] = title,
            ["model"] = model,
            ["separator"] = separator,
            ["texts"] = new JsonArray([.. texts.Select(Text)]),
        };
        // The default encoder escapes <, > and & (as \u003C …), so the JSON cannot close its script element.
        var json = data.ToJsonString();
        var encodedTitle = WebUtility.HtmlEncode(title);
        // One pass, so nothing inserted (a title, a scored text) is read as a placeholder again.
        var page = Placeholder().Replace(Template, m => m.Groups[1].Value == "DATA" ? json : encodedTitle);
        var full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        File.WriteAllText(full, page, new UTF8Encoding(false));
    }

    private static JsonObject Text(ScorePageText item)
    {
        var score = item.Score;
        return new JsonObject
        {
            ["title"] = item.Title,
            ["text"] = score.Text,
            ["source"] = score.SourceTokens is { } source ? new JsonArray([.. source.Select(s => (JsonNode)s)]) : null,
            ["context"] = item.Context,
            ["summary"] = new JsonObject
            {
                ["total"] = score.TotalLogProbability,
                ["mean"] = score.MeanLogProbability,
                ["perplexity"] = score.Perplexity,
                ["bits_per_byte"] = score.BitsPerByte,
                ["bits_per_char"] = score.BitsPerCharacter,
                ["tokens"] = score.Tokens.Count,
                ["windows"] = score.Windows,
            },
            ["tokens"] = new JsonArray([.. score.Tokens.Select(t => (JsonNode)new JsonObject
            {
                ["text"] = t.Text,
                ["p"] = t.Probability,
                ["lp"] = t.LogProbability,
                ["rank"] = t.Rank,
                ["entropy"] = t.Entropy,
                ["context"] = t.Context,
                ["top"] = new JsonArray([.. t.TopK.Select(c => (JsonNode)new JsonArray(c.Text, c.Probability, c.Id == t.Id))]),
            })]),
            ["attention"] = new JsonArray([.. item.Attention.Select(Map)]),
        };
    }

    private static JsonNode Map(AttentionMap map) => new JsonObject
    {
        ["kind"] = map.Kind,
        ["layer"] = map.Layer,
        ["queries"] = new JsonArray([.. map.QueryLabels.Select(l => (JsonNode)l)]),
        ["keys"] = new JsonArray([.. map.KeyLabels.Select(l => (JsonNode)l)]),
        // Maps whose queries are the scored sequence's positions follow the selected token; the encoder's do not.
        ["follows"] = map.Kind != "encoder self-attention",
        ["heads"] = new JsonArray([.. map.Heads.Select(h => (JsonNode)new JsonArray([.. h.Select(w => (JsonNode)Math.Round(w, 4))]))]),
    };

    [GeneratedRegex(@"\{\{(TITLE|DATA)\}\}")]
    private static partial Regex Placeholder();

    private const string Template = """
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{TITLE}}</title>
<script>
// Installed before the main script so that its errors, syntax errors included, are recorded where a headless browser's DOM dump shows them.
window.addEventListener('error', function (e) {
  var root = document.documentElement;
  root.setAttribute('data-errors', (root.getAttribute('data-errors') || '') + (e.message || 'error') + ';');
});
</script>
<style>
  body { font: 14px/1.45 system-ui, sans-serif; margin: 18px 24px; color: #222; background: #fafafa; }
  h1 { font-size: 20px; margin: 0 0 4px; }
  h2 { font-size: 15px; margin: 0 0 8px; }
  .muted { color: #777; }
  section { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 10px 14px; margin: 10px 0; }
  #summary b { font-variant-numeric: tabular-nums; }
  #strip { line-height: 2.1; font-family: ui-monospace, monospace; }
  .tok { padding: 2px 1px; margin: 0 1px; border-radius: 3px; cursor: pointer; white-space: pre; border: 1px solid transparent; }
  .tok.context { color: #888; background: #eee; cursor: default; }
  .tok.selected { border-color: #000; box-shadow: 0 0 0 1px #000; }
  .legend { display: inline-block; width: 160px; height: 10px; vertical-align: middle; background: linear-gradient(to right, hsl(0,70%,78%), hsl(60,70%,78%), hsl(120,70%,78%)); }
  .columns { display: flex; gap: 14px; align-items: flex-start; flex-wrap: wrap; }
  .columns > section { flex: 1 1 420px; margin: 0; }
  table { border-collapse: collapse; }
  td, th { padding: 2px 8px; text-align: left; font-variant-numeric: tabular-nums; }
  #distribution td.token, #positions td.token { font-family: ui-monospace, monospace; white-space: pre; }
  .bar { height: 14px; background: #4c78a8; border-radius: 2px; }
  tr.actual td { background: #ffe9a8; font-weight: 600; }
  tr.actual .bar { background: #e45756; }
  #attention-view { max-height: 560px; overflow: auto; border: 1px solid #eee; }
  #attention-view text { font: 12px ui-monospace, monospace; cursor: pointer; }
  #heads button { margin: 0 3px 4px 0; border: 1px solid #999; border-radius: 3px; background: #fff; cursor: pointer; }
  #heads button.on { color: #fff; }
  #positions tr.selected td { background: #e8f0fe; }
  #positions tbody tr { cursor: pointer; }
</style>
</head>
<body>
<h1>{{TITLE}}</h1>
<div class="muted" id="model"></div>
<div id="chooser"></div>
<section id="summary"></section>
<section>
  <h2>Tokens <span class="muted">— colour: the probability the model gave each token (<span class="legend"></span> 10⁻⁴ … 1); click or hover one</span></h2>
  <div id="strip"></div>
</section>
<div class="columns">
  <section>
    <h2>Next-token distribution</h2>
    <div id="distribution-context" class="muted"></div>
    <table id="distribution"><tbody></tbody></table>
    <div id="distribution-stats"></div>
  </section>
  <section>
    <h2>Attention</h2>
    <div><select id="maps"></select> <span class="muted">hover a query on the left</span></div>
    <div id="heads"></div>
    <div id="attention-view"></div>
    <div id="attends-caption" class="muted"></div>
    <ol id="attends"></ol>
  </section>
</div>
<section>
  <h2>Every position</h2>
  <table id="positions"><thead><tr><th>#</th><th>token</th><th>P</th><th>ln P</th><th>rank</th><th>entropy</th><th>top candidates</th></tr></thead><tbody></tbody></table>
</section>
<script type="application/json" id="score-data">{{DATA}}</script>
<script>
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('score-data').textContent);
  var hash = new URLSearchParams(location.hash.slice(1));
  var HEAD_COLOURS = ['#4c78a8', '#f58518', '#54a24b', '#e45756', '#72b7b2', '#b279a2', '#ff9da6', '#9d755d', '#bab0ac', '#eeca3b', '#8e6c8a', '#3b8bc2'];
  var state = {
    text: clamp(intOr(hash.get('text'), 0), 0, data.texts.length - 1),
    pos: intOr(hash.get('pos'), 0),
    map: intOr(hash.get('map'), 0),
    head: hash.get('head') === null || hash.get('head') === 'all' ? 'all' : intOr(hash.get('head'), 0),
    query: null
  };

  function intOr(value, fallback) { var n = parseInt(value, 10); return isNaN(n) ? fallback : n; }
  function clamp(x, lo, hi) { return Math.max(lo, Math.min(hi, x)); }
  function el(tag, attributes, text) {
    var node = document.createElement(tag);
    for (var name in attributes || {}) node.setAttribute(name, attributes[name]);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function formatP(p) { return p >= 0.001 ? p.toFixed(4) : p.toExponential(2); }
  function label(token) {
    return token.replace(/ /g, '\u00b7').replace(/\n/g, '\u21b5').replace(/\t/g, '\u2192').replace(/[\u0000-\u001f]/g, function (c) {
      return '\\x' + c.charCodeAt(0).toString(16).padStart(2, '0');
    }) || '\u2205';
  }
  function colour(p) {
    var t = clamp((Math.log10(Math.max(p, 1e-12)) + 4) / 4, 0, 1);
    return 'hsl(' + Math.round(120 * t) + ',70%,78%)';
  }
  function current() { return data.texts[state.text]; }

  function renderChooser() {
    var chooser = document.getElementById('chooser');
    chooser.textContent = '';
    if (data.texts.length < 2) return;
    var select = el('select', { id: 'texts' });
    data.texts.forEach(function (t, i) {
      var option = el('option', { value: i }, t.title);
      if (i === state.text) option.selected = true;
      select.appendChild(option);
    });
    select.addEventListener('change', function () { state.text = +select.value; state.pos = 0; state.map = 0; state.query = null; renderText(); });
    chooser.appendChild(select);
  }

  function renderSummary() {
    var s = current().summary, summary = document.getElementById('summary');
    summary.textContent = '';
    function item(name, id, value, unit) {
      summary.appendChild(document.createTextNode(name + ' '));
      summary.appendChild(el('b', { id: id }, value));
      summary.appendChild(document.createTextNode((unit ? ' ' + unit : '') + ' \u00b7 '));
    }
    item('ln P(text) =', 'total', s.total.toFixed(3), 'nats');
    item('mean', 'mean', s.mean.toFixed(4), 'nats/token');
    item('perplexity', 'perplexity', s.perplexity.toFixed(3));
    if (s.bits_per_byte !== null) item('', 'bits-per-byte', s.bits_per_byte.toFixed(3), 'bits/byte');
    if (s.bits_per_char !== null) item('', 'bits-per-char', s.bits_per_char.toFixed(3), 'bits/char');
    summary.appendChild(el('span', { id: 'count' }, s.tokens + ' tokens scored in ' + s.windows + (s.windows === 1 ? ' window' : ' windows')));
    var source = current().source;
    if (source) summary.appendChild(el('div', { id: 'source' }, 'source: ' + source.map(label).join(' ')));
  }

  function renderStrip() {
    var strip = document.getElementById('strip'), t = current();
    strip.textContent = '';
    if (t.context) strip.appendChild(el('span', { 'class': 'tok context', title: 'context (not scored)' }, label(t.context)));
    t.tokens.forEach(function (token, j) {
      var span = el('span', { 'class': 'tok' + (j === state.pos ? ' selected' : ''), 'data-pos': j,
        title: 'P = ' + formatP(token.p) + ', rank ' + token.rank }, label(token.text));
      span.style.background = colour(token.p);
      span.addEventListener('mouseenter', function () { select(j); });
      span.addEventListener('click', function () { select(j); });
      strip.appendChild(span);
    });
  }

  function renderDistribution() {
    var t = current(), token = t.tokens[state.pos];
    var before = t.tokens.slice(Math.max(0, state.pos - 24), state.pos).map(function (x) { return x.text; }).join(data.separator);
    document.getElementById('distribution-context').textContent =
      'Position ' + (state.pos + 1) + ': after \u201c\u2026' + label(before) + '\u201d (' + token.context + ' tokens of context) the model expected:';
    var body = document.querySelector('#distribution tbody');
    body.textContent = '';
    var top = token.top[0] ? token.top[0][1] : 1;
    function row(text, p, actual, rank) {
      var tr = el('tr', { 'class': 'candidate' + (actual ? ' actual' : '') });
      tr.appendChild(el('td', {}, rank));
      tr.appendChild(el('td', { 'class': 'token' }, label(text)));
      var cell = el('td', { style: 'width: 200px' }), bar = el('div', { 'class': 'bar' });
      bar.style.width = Math.max(1, Math.round(200 * p / top)) + 'px';
      cell.appendChild(bar);
      tr.appendChild(cell);
      tr.appendChild(el('td', { 'class': 'p' }, formatP(p)));
      tr.appendChild(el('td', {}, actual ? '\u2190 actual' : ''));
      body.appendChild(tr);
    }
    token.top.forEach(function (c, i) { row(c[0], c[1], c[2], '#' + (i + 1)); });
    if (token.rank > token.top.length) row(token.text, token.p, true, '#' + token.rank);
    document.getElementById('distribution-stats').textContent =
      'actual ' + label(token.text) + ': P = ' + formatP(token.p) + ', ln P = ' + token.lp.toFixed(3) + ', rank ' + token.rank +
      ', entropy ' + token.entropy.toFixed(3) + ' nats';
  }

  function renderMaps() {
    var select = document.getElementById('maps'), maps = current().attention;
    select.textContent = '';
    state.map = clamp(state.map, 0, Math.max(0, maps.length - 1));
    maps.forEach(function (m, i) {
      var option = el('option', { value: i }, m.kind + ', layer ' + m.layer);
      if (i === state.map) option.selected = true;
      select.appendChild(option);
    });
    select.onchange = function () { state.map = +select.value; state.query = null; renderAttention(); };
  }

  function renderHeads(map) {
    var heads = document.getElementById('heads');
    heads.textContent = '';
    function button(text, value, colour) {
      var b = el('button', { 'class': state.head === value ? 'on' : '' }, text);
      if (state.head === value) b.style.background = colour;
      b.addEventListener('click', function () { state.head = value; renderAttention(); });
      heads.appendChild(b);
    }
    button('all heads', 'all', '#555');
    map.heads.forEach(function (_, h) { button('head ' + h, h, HEAD_COLOURS[h % HEAD_COLOURS.length]); });
  }

  function renderAttention() {
    var maps = current().attention, view = document.getElementById('attention-view');
    view.textContent = '';
    document.getElementById('attends').textContent = '';
    if (!maps.length) { view.textContent = 'No attention for this text.'; return; }
    state.map = clamp(state.map, 0, maps.length - 1);
    var map = maps[state.map];
    if (state.head !== 'all') state.head = clamp(state.head, 0, map.heads.length - 1);
    renderHeads(map);
    var tq = map.queries.length, tk = map.keys.length;
    var q = state.query !== null ? state.query : (map.follows ? clamp(state.pos, 0, tq - 1) : 0);
    q = clamp(q, 0, tq - 1);
    var shown = state.head === 'all' ? map.heads.map(function (_, h) { return h; }) : [state.head];
    function weight(h, k) { return map.heads[h][q * tk + k]; }

    var ns = 'http://www.w3.org/2000/svg', rowHeight = 18, width = 420, left = 150, right = 270;
    var svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('width', width);
    svg.setAttribute('height', Math.max(tq, tk) * rowHeight + 10);
    function text(x, y, value, anchor, weightValue, onHover) {
      var t = document.createElementNS(ns, 'text');
      t.setAttribute('x', x); t.setAttribute('y', y); t.setAttribute('text-anchor', anchor);
      t.textContent = label(value);
      if (weightValue !== null) {
        var r = document.createElementNS(ns, 'rect');
        r.setAttribute('x', anchor === 'end' ? x - 110 : x - 2); r.setAttribute('y', y - 12);
        r.setAttribute('width', 112); r.setAttribute('height', 16);
        r.setAttribute('fill', 'rgba(76,120,168,' + weightValue.toFixed(3) + ')');
        svg.appendChild(r);
      }
      if (onHover) { t.addEventListener('mouseenter', onHover); t.addEventListener('click', onHover); }
      svg.appendChild(t);
    }
    for (var i = 0; i < tq; i++) {
      (function (i) {
        text(left - 8, i * rowHeight + 16, map.queries[i], 'end', i === q ? 0.25 : null, function () { state.query = i; renderAttention(); });
      })(i);
    }
    for (var k = 0; k < tk; k++) {
      var strongest = Math.max.apply(null, shown.map(function (h) { return weight(h, k); }));
      text(right + 8, k * rowHeight + 16, map.keys[k], 'start', strongest, null);
      shown.forEach(function (h) {
        var w = weight(h, k);
        if (w < 0.005) return;
        var line = document.createElementNS(ns, 'line');
        line.setAttribute('x1', left); line.setAttribute('y1', q * rowHeight + 12);
        line.setAttribute('x2', right); line.setAttribute('y2', k * rowHeight + 12);
        line.setAttribute('stroke', HEAD_COLOURS[h % HEAD_COLOURS.length]);
        line.setAttribute('stroke-width', 2);
        line.setAttribute('stroke-opacity', Math.min(1, w).toFixed(3));
        svg.appendChild(line);
      });
    }
    view.appendChild(svg);

    // The strongest keys in numbers: the selected head's weights, or the mean over heads.
    var means = [];
    for (var key = 0; key < tk; key++) {
      var sum = 0;
      shown.forEach(function (h) { sum += weight(h, key); });
      means.push({ key: key, w: sum / shown.length });
    }
    means.sort(function (a, b) { return b.w - a.w || a.key - b.key; });
    document.getElementById('attends-caption').textContent = 'Query ' + q + ' (' + label(map.queries[q]) + ') attends most to' +
      (state.head === 'all' ? ' (mean of the heads):' : ' (head ' + state.head + '):');
    var list = document.getElementById('attends');
    means.slice(0, 5).forEach(function (m) {
      var item = el('li', { 'class': 'attends', 'data-key': m.key });
      item.appendChild(el('span', { 'class': 'token' }, label(map.keys[m.key]) + ' (key ' + m.key + ') '));
      item.appendChild(el('b', { 'class': 'weight' }, m.w.toFixed(3)));
      list.appendChild(item);
    });
  }

  function renderPositions() {
    var body = document.querySelector('#positions tbody');
    body.textContent = '';
    current().tokens.forEach(function (token, j) {
      var tr = el('tr', { 'class': 'position-row' + (j === state.pos ? ' selected' : ''), 'data-pos': j });
      tr.appendChild(el('td', {}, j + 1));
      var cell = el('td', { 'class': 'token' }, label(token.text));
      cell.style.background = colour(token.p);
      tr.appendChild(cell);
      tr.appendChild(el('td', { 'class': 'p' }, formatP(token.p)));
      tr.appendChild(el('td', { 'class': 'lp' }, token.lp.toFixed(3)));
      tr.appendChild(el('td', { 'class': 'rank' }, token.rank));
      tr.appendChild(el('td', { 'class': 'entropy' }, token.entropy.toFixed(3)));
      tr.appendChild(el('td', { 'class': 'token' }, token.top.slice(0, 3).map(function (c) { return label(c[0]) + ' ' + formatP(c[1]); }).join('   ')));
      tr.addEventListener('click', function () { select(j); });
      body.appendChild(tr);
    });
  }

  function select(j) {
    if (j === state.pos) return;
    state.pos = j;
    state.query = null;
    document.querySelectorAll('#strip .tok[data-pos]').forEach(function (s) { s.classList.toggle('selected', +s.getAttribute('data-pos') === j); });
    document.querySelectorAll('#positions tr.position-row').forEach(function (r) { r.classList.toggle('selected', +r.getAttribute('data-pos') === j); });
    renderDistribution();
    renderAttention();
  }

  function renderText() {
    state.pos = clamp(state.pos, 0, current().tokens.length - 1);
    renderSummary();
    renderStrip();
    renderDistribution();
    renderMaps();
    renderAttention();
    renderPositions();
  }

  document.getElementById('model').textContent = data.model;
  renderChooser();
  renderText();
  document.documentElement.setAttribute('data-ready', '1');
})();
</script>
</body>
</html>
""";
}
