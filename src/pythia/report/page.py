"""The report as one self-contained HTML file: plotly.js inlined once (from the installed plotly
package; no CDN, no network), every figure's JSON in one data block, drawn on load.

The page checks itself: console errors and uncaught exceptions are collected from the first
script on, and once every figure has been drawn a hidden `#report-status` element receives
JSON {state, expected, drawn, sections: {key: {expected, drawn}}, menus, menuShown, ySums, ms,
errors} (`ms`: milliseconds from the page's navigation to that moment).
Opened as `index.html#selftest`, the page also switches every figure's menu to its last option
and back first (`menus` counts them, `menuShown` gives each figure's traces shown at its last
option) and records, per trace drawn on load, how many numbers its y holds and their sum
(`ySums`: the decoded data). A headless browser reads it back (`--dump-dom`):
tests/report/test_browser.py.

Menus are plain <select> elements, not plotly's updatemenus, whose buttons each carry the
visibility of every trace (a menu of 300 imported tasks made 2 MB of them). Only a menu's first
option is drawn on load; the page keeps the others' traces as data and draws an option with
`Plotly.react` when it is picked, so a menu of 60 metrics over 50 members costs the browser one
option's traces, not all of them.

The figures' data is written compactly (pythia.report.compact): arrays that several traces
share written once in a pool (`#report-arrays`) that traces refer to as `{"@": index}`, long
numeric arrays as base64 typed arrays; the page decodes both before drawing.
"""
from __future__ import annotations

import html
import re

from .compact import compact, dumps
from .header import Header
from .plot import readable_layout
from .sections import Section, Table

STATUS_ID = "report-status"

_CAPTURE = """<script>
window.PlotlyConfig = {MathJaxConfig: 'local'};
window.__reportErrors = [];
window.addEventListener('error', function (e) {
  window.__reportErrors.push('uncaught: ' + (e.message || e.type) + (e.filename ? ' at ' + e.filename + ':' + e.lineno : ''));
});
window.addEventListener('unhandledrejection', function (e) { window.__reportErrors.push('rejection: ' + e.reason); });
(function () {
  var original = console.error;
  console.error = function () {
    window.__reportErrors.push('console.error: ' + Array.prototype.map.call(arguments, String).join(' '));
    return original.apply(console, arguments);
  };
})();
</script>"""

_RENDER = """<script>
(function () {
  var status = document.getElementById('%(status)s');
  var menusTried = 0, menuShown = {}, ySums = {};
  function drawn(root) {
    return Array.prototype.filter.call(root.querySelectorAll('.plot'), function (d) {
      return d.classList.contains('js-plotly-plot') && d.querySelector('.main-svg') !== null;
    }).length;
  }
  function finish(state) {
    var sections = {};
    document.querySelectorAll('section[data-key]').forEach(function (s) {
      sections[s.dataset.key] = {expected: Number(s.dataset.figures), drawn: drawn(s)};
    });
    status.textContent = JSON.stringify({state: state, expected: figures.length, drawn: drawn(document),
                                         sections: sections, menus: menusTried, menuShown: menuShown,
                                         ySums: ySums, ms: Math.round(performance.now()), errors: window.__reportErrors});
    status.setAttribute('data-state', state);
  }
  var figures = JSON.parse(document.getElementById('report-figures').textContent);
  var pool = JSON.parse(document.getElementById('report-arrays').textContent);
  var byId = {};
  figures.forEach(function (f) { byId[f.id] = f; });
  function decode(v) {  // {dtype: 'i4' | 'f4', bdata: base64} -> a typed array (NaN: a gap)
    if (v === null || typeof v !== 'object' || typeof v.bdata !== 'string') { return v; }
    var s = atob(v.bdata), bytes = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) { bytes[i] = s.charCodeAt(i); }
    return v.dtype === 'i4' ? new Int32Array(bytes.buffer) : new Float32Array(bytes.buffer);
  }
  pool = pool.map(decode);
  function resolve(traces) {  // {"@": k} -> the pool's array k (shared, never copied); typed arrays decoded
    traces.forEach(function (t) {
      Object.keys(t).forEach(function (key) {
        var v = t[key];
        if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
          t[key] = typeof v['@'] === 'number' ? pool[v['@']] : decode(v);
        }
      });
    });
    return traces;
  }
  function setDotted(obj, key, value) {
    var parts = key.split('.');
    for (var i = 0; i < parts.length - 1; i++) {
      if (obj[parts[i]] === undefined || obj[parts[i]] === null) { obj[parts[i]] = {}; }
      obj = obj[parts[i]];
    }
    obj[parts[parts.length - 1]] = value;
  }
  function choose(f, i) {  // draw option i of a figure's menu: its traces, the layout with its changes
    var m = f.menu;
    var traces = i === 0 ? f.data : resolve(m.options[i - 1]);
    var layout = JSON.parse(f.pristine);
    var change = m.relayout[i] || {};
    Object.keys(change).forEach(function (key) { setDotted(layout, key, change[key]); });
    return Plotly.react(f.id, traces, layout);
  }
  document.querySelectorAll('select.menu').forEach(function (sel) {
    sel.addEventListener('change', function () { choose(byId[sel.dataset.fig], Number(sel.value)); });
  });
  function ySum(f) {  // per trace drawn on load: [numbers in y, their sum] (the decoded data, checked by tests)
    return document.getElementById(f.id).data.map(function (t) {
      var n = 0, sum = 0;
      Array.prototype.forEach.call(t.y || [], function (v) { if (typeof v === 'number' && isFinite(v)) { n += 1; sum += v; } });
      return [n, sum];
    });
  }
  function selfTest() {  // index.html#selftest: record what was drawn, switch every menu to its last option and back
    figures.forEach(function (f) { ySums[f.id] = ySum(f); });
    return figures.filter(function (f) { return f.menu; }).reduce(function (done, f) {
      return done.then(function () { return choose(f, f.menu.relayout.length - 1); })
                 .then(function () {
                   menuShown[f.id] = document.getElementById(f.id).data.filter(function (t) {
                     return t.visible !== false; }).length;
                   return choose(f, 0);
                 })
                 .then(function () { menusTried += 1; });
    }, Promise.resolve());
  }
  if (typeof Plotly === 'undefined') { window.__reportErrors.push('plotly.js did not load'); finish('error'); return; }
  var config = {responsive: true, displaylogo: false, toImageButtonOptions: {format: 'png', scale: 2}};
  Promise.all(figures.map(function (f) {
    resolve(f.data);
    if (f.menu) { f.pristine = JSON.stringify(f.layout); }  // plotly writes computed ranges into the layout
    return Plotly.newPlot(f.id, f.data, f.layout, config).catch(function (e) {
      window.__reportErrors.push('figure ' + f.id + ': ' + e);
    });
  })).then(function () { return location.hash === '#selftest' ? selfTest() : null; })
    .then(function () { finish('done'); }, function (e) { window.__reportErrors.push(String(e)); finish('error'); });
})();
</script>"""

_CSS = """<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #222; background: #fafafa; }
header, main, nav { max-width: 1400px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 18px; }
h1 { font-size: 24px; margin: 0 0 2px; } h2 { font-size: 19px; margin: 0 0 6px; }
.sub { color: #666; margin: 0 0 12px; word-break: break-all; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 8px 0; }
dt { font-weight: 600; color: #444; } dd { margin: 0; word-break: break-word; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600; font-size: 12px; }
.ok { background: #d9f2dd; color: #17692a; } .problems { background: #fadadd; color: #9b1c2c; }
.neutral { background: #e8e8e8; color: #555; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 13px; background: #fff; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; } th { background: #f0f0f0; }
caption { text-align: left; color: #555; padding: 2px 0; caption-side: top; }
nav { padding-top: 6px; padding-bottom: 6px; } nav a { margin-right: 14px; }
section { background: #fff; border: 1px solid #e3e3e3; border-radius: 6px; padding: 14px 16px; margin: 14px 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 12px; }
figure { margin: 0; min-width: 0; } figure.wide { grid-column: 1 / -1; }
figcaption { font-weight: 600; margin-bottom: 2px; }
select.menu { margin: 2px 0 0 50px; max-width: 90%; font-size: 13px; } .note { color: #555; font-size: 12.5px; margin: 2px 0 0; }
.notes { color: #7a5b00; margin: 4px 0 10px; padding-left: 18px; } .errors { color: #9b1c2c; }
details.small summary { cursor: pointer; color: #555; } code { background: #f2f2f2; padding: 0 3px; border-radius: 3px; }
footer { max-width: 1400px; margin: 0 auto 30px; padding: 0 24px; color: #777; font-size: 12px; }
</style>"""


def text(s: str) -> str:
    """Escaped text; `backticks` become <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(str(s)))


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return html.escape("" if v is None else str(v))


def table_html(t: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in t.rows)
    caption = f"<caption>{text(t.caption)}</caption>" if t.caption else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def header_html(h: Header) -> str:
    badge = {"ok": "ok", "problems": "problems"}.get(h.verify_status, "neutral")
    facts = "".join(f"<dt>{html.escape(k)}</dt><dd>{text(v)}</dd>" for k, v in h.facts)
    verify = f'<span class="badge {badge}">{html.escape(h.verify_status)}</span>'
    if h.verify_lines:
        lines = "".join(f"<li>{text(x)}</li>" for x in h.verify_lines[:40])
        more = f"<li>... {len(h.verify_lines) - 40} more</li>" if len(h.verify_lines) > 40 else ""
        verify += f' <details class="small"><summary>details</summary><ul>{lines}{more}</ul></details>'
    facts += f"<dt>verify</dt><dd>{verify}</dd>"
    facts += "<dt>versions</dt><dd>" + html.escape(", ".join(f"{k} {v}" for k, v in h.versions)) + "</dd>"
    parts = [f"<h1>{html.escape(h.title)}</h1>", f'<p class="sub">{text(h.subtitle)}</p>', f"<dl>{facts}</dl>"]
    if h.members is not None and h.members.rows:
        parts.append(table_html(Table(h.members.columns, h.members.rows, "Members")))
    if h.results is not None and h.results.rows:
        parts.append(table_html(Table(h.results.columns, h.results.rows, "Results in this report (all in results.csv)")))
    return "<header>" + "".join(parts) + "</header>"


def menu_html(fig, fig_id: str) -> str:
    """The <select> that picks a figure's option (wired in _RENDER)."""
    if not fig.menu:
        return ""
    options = "".join(f'<option value="{i}">{html.escape(label)}</option>' for i, label in enumerate(fig.menu))
    return f'<select class="menu" data-fig="{fig_id}" aria-label="{html.escape(fig.title)}">{options}</select>'


def section_html(sec: Section, first_id: int) -> str:
    out = [f'<section id="{html.escape(sec.key)}" data-key="{html.escape(sec.key)}" data-figures="{len(sec.figures)}">',
           f"<h2>{html.escape(sec.title)}</h2>"]
    if sec.intro:
        out.append(f"<p>{text(sec.intro)}</p>")
    if sec.errors:
        out.append('<ul class="notes errors">' + "".join(f"<li>could not draw: {text(e)}</li>" for e in sec.errors) + "</ul>")
    if sec.notes:
        out.append('<ul class="notes">' + "".join(f"<li>{text(n)}</li>" for n in sec.notes) + "</ul>")
    if sec.figures:
        out.append('<div class="grid">')
        for i, fig in enumerate(sec.figures):
            note = f'<p class="note">{text(fig.note)}</p>' if fig.note else ""
            out.append(f'<figure{" class=wide" if fig.wide else ""}><figcaption>{text(fig.title)}</figcaption>'
                       f'{menu_html(fig, f"fig-{first_id + i}")}<div class="plot" id="fig-{first_id + i}"></div>'
                       f'{note}</figure>')
        out.append("</div>")
    out += [table_html(t) for t in sec.tables]
    out.append("</section>")
    return "".join(out)


def _option_trace(trace: dict, shown) -> dict:
    """A trace as its menu option draws it: with the visibility it has while the option is chosen."""
    out = {k: v for k, v in trace.items() if k != "visible"}
    if shown is not True:
        out["visible"] = shown
    return out


def _entries(sections: list[Section]) -> list[dict]:
    """Per figure: its id, the traces drawn on load, its layout and (a menu) every other option's
    traces and each option's layout changes."""
    figs, n = [], 0
    for sec in sections:
        for fig in sec.figures:
            entry = {"id": f"fig-{n}", "data": fig.data, "layout": {"autosize": True, **readable_layout(fig)}}
            if fig.menu:
                options: list[list[dict]] = [[] for _ in fig.menu]
                for trace, owner, shown in zip(fig.data, fig.owner, fig.shown, strict=True):
                    options[owner].append(_option_trace(trace, shown))
                entry["data"] = options[0]
                entry["menu"] = {"options": options[1:], "relayout": fig.relayout}
            figs.append(entry)
            n += 1
    return figs


def page_data(sections: list[Section]) -> tuple[str, str]:
    """(the figures, the pool of shared arrays) as JSON for the page's two data blocks
    (pythia.report.compact); `</` escaped so that no string can end the script element."""
    figs, pool = compact(_entries(sections))
    return dumps(figs).replace("</", "<\\/"), dumps(pool).replace("</", "<\\/")


def render_page(header: Header, sections: list[Section], plotlyjs: str) -> str:
    nav = "".join(f'<a href="#{html.escape(s.key)}">{html.escape(s.title)}</a>' for s in sections)
    body, n = [], 0
    for sec in sections:
        body.append(section_html(sec, n))
        n += len(sec.figures)
    if not sections:
        body.append('<section data-key="empty" data-figures="0"><h2>No results</h2><p>The results table is empty: '
                    "run <code>pythia analyze RUN val_loss</code> (or any analysis) first.</p></section>")
    figures, arrays = page_data(sections)
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(header.title)}: pythia report</title>", _CAPTURE, _CSS,
        f"<script>{plotlyjs}</script>", "</head><body>", header_html(header),
        f"<nav>{nav}</nav>" if nav else "", "<main>", *body, "</main>",
        '<footer>Written by <code>pythia report</code>. Plots: hover for values; click a legend entry to '
        "hide or show it, a size's title to toggle the size; drag to zoom, double-click to reset. The step axis "
        "is logarithmic with step 0 at its left edge (points at step + 1, labelled with real steps).</footer>",
        f'<div id="{STATUS_ID}" hidden data-state="pending"></div>',
        f'<script type="application/json" id="report-figures">{figures}</script>',
        f'<script type="application/json" id="report-arrays">{arrays}</script>',
        _RENDER % {"status": STATUS_ID}, "</body></html>", ""])
