"""The QC page: one static HTML file (inline CSS and JS, inline SVG plots; images by relative path).

DOM contract (for tests and for tools built on the report):

* every mask row of the manifest that has a ``path`` has exactly one element with
  ``data-mask="<manifest path>"`` (the card, holding its overlay images); every image row
  without a mask has exactly one element with ``data-image="<manifest path>"``;
* cards and cohort-table rows carry ``data-centre``, ``data-modality``, ``data-status``
  (``done`` | ``skipped`` | ``failed``: ingest then extraction) and ``data-flags``
  (space-separated QC flags, ``outlier`` included); the table is ``table#cohort``, its
  sortable headers ``th[data-sort]``; the filters are ``select#filter-centre``,
  ``#filter-modality``, ``#filter-flag`` and ``#filter-status`` (value ``""``: all);
  hidden rows and cards get the ``hidden`` attribute;
* skipped and failed cases are listed in ``#problems`` (one ``li[data-case]`` each).
"""

from __future__ import annotations

import hashlib
import html
import math
from typing import Any

from . import display
from .render import MASK_VIEWS

VIEW_TITLES = {"axial": "axial (centroid)", "coronal": "coronal (centroid)", "sagittal": "sagittal (centroid)",
               "axial_max": "axial (largest ROI area)"}
METRIC_LABELS = {"volume_ml": "ROI volume (ml)", "mean_intensity": "mean intensity in the ROI"}
IMAGE_VIEW_TITLES = {"axial": "axial (centre)", "coronal": "coronal (centre)", "sagittal": "sagittal (centre)"}

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2433}
header,section{padding:12px 20px}header{background:#1d2433;color:#fff}header h1{margin:0 0 4px;font-size:20px}
h2{font-size:16px;margin:18px 0 8px}.muted{color:#667}.bar{display:flex;gap:14px;flex-wrap:wrap;align-items:center;
position:sticky;top:0;background:#fff;padding:8px 20px;border-bottom:1px solid #ccd;z-index:2}
table{border-collapse:collapse;background:#fff;font-size:12px}th,td{border:1px solid #dde;padding:3px 6px;text-align:left}
th[data-sort]{cursor:pointer;user-select:none;background:#eef}th[aria-sort=ascending]::after{content:" \\25B2"}
th[aria-sort=descending]::after{content:" \\25BC"}td.num{text-align:right}.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #ccd;border-radius:6px;padding:8px;max-width:860px}
.card h3{margin:0 0 4px;font-size:14px}.card .imgs{display:flex;gap:4px;flex-wrap:wrap;align-items:flex-start}
figure{margin:0;width:min-content}figcaption{font-size:11px;color:#556}.card img{display:block;background:#000}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;vertical-align:middle;margin-right:4px}
.flag{display:inline-block;background:#fde2e1;color:#8a1c14;border-radius:3px;padding:0 4px;margin:0 2px;font-size:11px}
.st-failed{color:#b00020;font-weight:bold}.st-skipped{color:#a36200;font-weight:bold}dl{display:grid;
grid-template-columns:max-content auto;gap:0 8px;font-size:12px;margin:4px 0}dt{color:#556}dd{margin:0}
.plots{display:flex;flex-wrap:wrap;gap:10px}.plots svg{background:#fff;border:1px solid #dde}
.meter{display:inline-block;height:9px;background:#c33;vertical-align:middle}.meter.after{background:#36c}
.scroll{max-height:380px;overflow:auto;display:inline-block;border:1px solid #ccd}
.scroll thead th{position:sticky;top:0}
[hidden]{display:none!important}
"""

JS = r"""
(function () {
  "use strict";
  var selects = ["centre", "modality", "flag", "status"].map(function (n) {
    return document.getElementById("filter-" + n);
  });
  function matches(el) {
    var c = selects[0].value, m = selects[1].value, f = selects[2].value, s = selects[3].value;
    var flags = (el.getAttribute("data-flags") || "").split(" ").filter(Boolean);
    if (c && el.getAttribute("data-centre") !== c) return false;
    if (m && el.getAttribute("data-modality") !== m) return false;
    if (s && el.getAttribute("data-status") !== s) return false;
    if (f === "__any__" && flags.length === 0) return false;
    if (f === "__none__" && flags.length > 0) return false;
    if (f && f !== "__any__" && f !== "__none__" && flags.indexOf(f) < 0) return false;
    return true;
  }
  function apply() {
    var shown = 0, total = 0;
    document.querySelectorAll("[data-filterable]").forEach(function (el) {
      var ok = matches(el);
      if (ok) { el.removeAttribute("hidden"); } else { el.setAttribute("hidden", ""); }
      if (el.tagName === "ARTICLE") { total += 1; if (ok) shown += 1; }
    });
    document.getElementById("shown").textContent = shown + " of " + total + " cards shown";
  }
  selects.forEach(function (s) { s.addEventListener("change", apply); });
  var table = document.getElementById("cohort");
  table.querySelectorAll("th[data-sort]").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th[data-sort]").forEach(function (o) { o.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var idx = Array.prototype.indexOf.call(th.parentNode.children, th);
      var num = th.getAttribute("data-sort") === "num";
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[idx].getAttribute("data-value"), y = b.cells[idx].getAttribute("data-value");
        var r;
        if (num) {
          var fx = x === "" ? Infinity : parseFloat(x), fy = y === "" ? Infinity : parseFloat(y);
          r = fx === fy ? 0 : (fx < fy ? -1 : 1);
          if (x === "" || y === "") { return x === y ? 0 : (x === "" ? 1 : -1); }
        } else {
          r = x.localeCompare(y);
        }
        return asc ? r : -r;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
  apply();
})();
"""


def e(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _fmt(v: float | None, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return f"{v:.{digits}g}"


def status_of(card) -> str:
    """``done`` | ``skipped`` | ``failed``: the ingest status, then (masks) the extraction's."""
    if card.status in ("skipped", "failed"):
        return card.status
    if card.info.get("error"):
        return "failed"
    if card.kind == "mask" and card.extraction in ("failed", "skipped"):
        return card.extraction
    return "done"


def _attrs(card) -> str:
    return (f'data-filterable data-centre="{e(card.centre)}" data-modality="{e(card.modality)}" '
            f'data-status="{status_of(card)}" data-flags="{e(" ".join(card.flags))}"')


def _anchor(card) -> str:
    return "card-" + hashlib.sha256(f"{card.kind}:{card.path}:{card.patient_id}:{card.roi}".encode()).hexdigest()[:12]


def _card(card) -> str:
    dom = f'data-mask="{e(card.path)}"' if card.kind == "mask" and card.path else (
        f'data-image="{e(card.path)}"' if card.kind == "image" and card.path else f'data-case="{e(card.patient_id)}"')
    title = f"{card.patient_id} · {card.modality}" + (f" · {card.roi}" if card.roi else " · image without mask")
    colour = card.info.get("colour")
    sw = f'<span class="swatch" style="background:rgb({",".join(map(str, colour))})"></span>' if colour else ""
    imgs = []
    titles = VIEW_TITLES if card.kind == "mask" else IMAGE_VIEW_TITLES
    for view in (card.views if card.info.get("views") else ()):
        v = card.info["views"][view]
        imgs.append(f'<figure><img src="thumbs/{card.key}_{view}.png" width="{v["w"]}" height="{v["h"]}" '
                    f'alt="{e(titles[view])}"><figcaption>{e(titles[view])} · slice {v["slice"]} · '
                    f'{v["mm_per_px"][1]:.2f} mm/px · bar {v["scale_bar_mm"]:g} mm</figcaption></figure>')
    st = status_of(card)
    facts = [("status", f'<span class="st-{st}">{st}</span> (ingest: {e(card.status)}'
              + (f", extraction: {e(card.extraction)}" if card.kind == "mask" else "") + ")"),
             ("centre / scanner", f"{e(card.centre)} / {e(card.scanner)}"),
             ("shape", e(card.shape)), ("spacing (mm)", e(card.spacing))]
    if card.kind == "mask":
        facts += [("ROI volume", f"{_fmt(card.volume_ml)} ml ({e(card.voxel_count)} voxels)"),
                  ("mean in ROI", f"{_fmt(card.values.get('mean_intensity'))} {e(card.units)}")]
    if card.info.get("window"):
        facts.append(("window", e(card.info["window"])))
    facts.append(("flags", "".join(f'<span class="flag">{e(f)}</span>' for f in card.flags) or "none"))
    why = [card.reason] if card.reason else []
    why += [f"extraction: {r}" for r in card.extraction_reasons]
    why += [f"outlier within centre: {o}" for o in card.outliers]
    why += list(card.info.get("notes", []))
    if card.info.get("error"):
        why.append(f"thumbnails not rendered: {card.info['error']}")
    if why:
        facts.append(("notes", "<br>".join(e(w) for w in why)))
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    return (f'<article class="card" id="{_anchor(card)}" {dom} {_attrs(card)}><h3>{sw}{e(title)}</h3>'
            f'<div class="muted">{e(card.path or "(no output file)")}</div><div class="imgs">{"".join(imgs)}</div>'
            f"<dl>{dl}</dl></article>")


def _table(cards, metrics: list[str]) -> str:
    cols = [("patient", "text"), ("centre", "text"), ("scanner", "text"), ("modality", "text"), ("ROI", "text"),
            ("status", "text"), ("flags", "text"), ("volume (ml)", "num"), ("mean in ROI", "num")]
    extra = [m for m in metrics if m not in ("volume_ml", "mean_intensity")]
    cols += [(m.replace("original_", ""), "num") for m in extra]
    head = "".join(f'<th data-sort="{t}">{e(n)}</th>' for n, t in cols)
    body = []
    for c in cards:
        cells = [(c.patient_id, None), (c.centre, None), (c.scanner, None), (c.modality, None), (c.roi or "—", None),
                 (status_of(c), None), (" ".join(c.flags), None)]
        nums = [c.volume_ml if c.kind == "mask" else None, c.values.get("mean_intensity")]
        nums += [c.values.get(m) for m in extra]
        tds = "".join(f'<td data-value="{e(v)}">{e(v)}</td>' for v, _ in cells[:5])
        tds += f'<td data-value="{status_of(c)}" class="st-{status_of(c)}">{status_of(c)}</td>'
        tds += f'<td data-value="{e(cells[6][0])}">{"".join(f"<span class=flag>{e(f)}</span>" for f in c.flags)}</td>'
        tds += "".join(f'<td class="num" data-value="{"" if v is None else repr(float(v))}">{_fmt(v)}</td>'
                       for v in nums)
        body.append(f'<tr {_attrs(c)} data-row="{_anchor(c)}">{tds}</tr>')
    # the patient cell links to its card
    body = [b.replace(f'<td data-value="{e(c.patient_id)}">{e(c.patient_id)}</td>',
                      f'<td data-value="{e(c.patient_id)}"><a href="#{_anchor(c)}">{e(c.patient_id)}</a></td>', 1)
            for b, c in zip(body, cards)]
    return (f'<div class="scroll"><table id="cohort"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
            "</table></div>")


def _strip_plot(title: str, groups: dict[str, list], width: int = 360, height: int = 200) -> str:
    """An inline SVG strip plot: one column of points per group; outliers (robust z > threshold) in red rings."""
    vals = [v for pts in groups.values() for v, _, _ in pts if v is not None and math.isfinite(v)]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    if hi <= lo:
        lo, hi = lo - 1, hi + 1
    pad_l, pad_b, pad_t = 56, 34, 22
    n = len(groups)
    colw = (width - pad_l - 8) / max(n, 1)

    def y(v: float) -> float:
        return pad_t + (height - pad_t - pad_b) * (1 - (v - lo) / (hi - lo))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{e(title)}"><text x="{pad_l}" y="14" font-size="12" font-weight="bold">{e(title)}</text>']
    for tick in (lo, (lo + hi) / 2, hi):
        parts.append(f'<text x="{pad_l - 4}" y="{y(tick) + 4:.1f}" font-size="10" text-anchor="end">{_fmt(tick, 3)}'
                     f'</text><line x1="{pad_l}" x2="{width - 8}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
                     'stroke="#e3e5ea"/>')
    for gi, (name, pts) in enumerate(sorted(groups.items())):
        cx = pad_l + colw * (gi + 0.5)
        top, _, sub = name.partition("\n")
        parts.append(f'<text x="{cx:.1f}" y="{height - 20}" font-size="10" text-anchor="middle">{e(top[:18])}</text>'
                     f'<text x="{cx:.1f}" y="{height - 7}" font-size="9" fill="#667" text-anchor="middle">'
                     f"{e(sub[:22])} n={len(pts)}</text>")
        for pi, (v, label, out) in enumerate(pts):
            if v is None or not math.isfinite(v):
                continue
            jit = ((int(hashlib.md5(label.encode()).hexdigest()[:6], 16) % 1000) / 1000 - 0.5) * colw * 0.5
            attrs = 'r="4" fill="none" stroke="#d00" stroke-width="2"' if out else 'r="2.5" fill="#36c" fill-opacity=".7"'
            parts.append(f'<circle cx="{cx + jit:.1f}" cy="{y(v):.1f}" {attrs}><title>{e(label)}: {_fmt(v)}'
                         f'{" (outlier)" if out else ""}</title></circle>')
    return "".join(parts) + "</svg>"


def _distributions(cards, metrics: list[str]) -> str:
    masks = [c for c in cards if c.kind == "mask"]
    out = []
    for modality in sorted({c.modality for c in masks}):
        mm = [c for c in masks if c.modality == modality]
        for metric in metrics:
            if not any(c.values.get(metric) is not None for c in mm):
                continue
            groups: dict[str, list] = {}  # one column per centre x scanner
            for c in mm:
                out_flag = any(o.startswith(metric + " ") for o in c.outliers)
                groups.setdefault(f"{c.centre}\n{c.scanner}", []).append((c.values.get(metric), c.patient_id, out_flag))
            out.append(_strip_plot(f"{modality} {METRIC_LABELS.get(metric, metric.replace('original_', ''))}", groups,
                                   width=max(300, 70 + 110 * len(groups)), height=190))
    return "".join(out) or '<p class="muted">No mask with values.</p>'


def _centre_effect(effect: dict) -> str:
    if not effect.get("available"):
        return f'<p class="muted">Not available: {e(effect.get("reason"))}.</p>'
    rows = []
    for r in effect["families"]:
        b, a = r["before"], r["after"]
        after = (f'<span class="meter after" style="width:{a * 120:.0f}px"></span> {a:.0%}' if a is not None else "n/a")
        rows.append(f'<tr><td>{e(r["family"])}</td><td class="num">{r["features"]}</td><td><span class="meter" '
                    f'style="width:{b * 120:.0f}px"></span> {b:.0%}</td><td>{after}</td></tr>')
    note = f'<p class="muted">{e(effect["reason"])}</p>' if effect.get("reason") else ""
    return (f'<p>Share of features per family that differ between centres ({", ".join(map(e, effect["centres"]))}; '
            f'Kruskal-Wallis p &lt; {effect["alpha"]:g}, {effect["patients"]} patients), before and after ComBat '
            "harmonisation fitted on all patients (descriptive; the experiments fit it inside cross-validation).</p>"
            '<table id="centre-effect"><thead><tr><th>family</th><th>features</th><th>before</th><th>after ComBat'
            f'</th></tr></thead><tbody>{"".join(rows)}</tbody></table>{note}')


def _mlflow(ml: dict) -> str:
    parts = []
    if ml.get("error"):
        parts.append(f'<p class="muted">{e(ml["error"])}</p>')
    pr = ml.get("pipeline_run")
    if pr:
        parts.append(f'<p>Pipeline run: {_run_link(pr)}</p>')
    for x in ml.get("experiments", []):
        head = f'<h3>Experiment {e(x["name"])}</h3>'
        if x.get("experiment_url"):
            head += f'<p><a href="{e(x["experiment_url"])}">open the experiment in the MLflow UI</a>; parent run ' \
                    f'{_run_link(x["run"])}</p>'
        rows = []
        figs = []
        for r in x.get("leaderboard", []):
            ci = f'[{_fmt(r.get("auc_ci_low"), 3)}, {_fmt(r.get("auc_ci_high"), 3)}]'
            rows.append(f'<tr><td>{e(r.get("pipeline"))}</td><td class="num">{_fmt(r.get("auc"), 3)}</td><td>{ci}</td>'
                        f'<td>{_run_link(r["link"])}</td></tr>')
            for p in r["link"].get("plots", []):
                figs.append(f'<figure><img src="{e(p["file"])}" width="260" alt="{e(r.get("pipeline"))} {e(p["title"])}">'
                            f'<figcaption>{e(r.get("pipeline"))}: {e(p["title"])}</figcaption></figure>')
        table = ('<table><thead><tr><th>pipeline</th><th>AUC</th><th>95% CI</th><th>run</th></tr></thead><tbody>'
                 + "".join(rows) + "</tbody></table>") if rows else ""
        parts.append(head + table + f'<div class="plots">{"".join(figs)}</div>')
    return "".join(parts) or '<p class="muted">No MLflow run recorded for this output.</p>'


def _run_link(link: dict) -> str:
    rid = e(link.get("run_id"))
    return f'<a href="{e(link["url"])}">{rid[:12]}</a>' if link.get("url") else f"<code>{rid[:12]}</code>"


def _options(name: str, values: list[str], extra: list[tuple[str, str]] = ()) -> str:
    opts = '<option value="">all</option>' + "".join(f'<option value="{e(v)}">{e(lbl)}</option>' for v, lbl in extra)
    opts += "".join(f'<option value="{e(v)}">{e(v)}</option>' for v in values)
    return f'<label>{name} <select id="filter-{name}">{opts}</select></label>'


def conventions() -> str:
    """The display conventions, as written on the page (from :mod:`biomarkers.qc.display`)."""
    return ("Radiological convention in every view: the patient's left is on the image's right; anterior is up in "
            "axial slices; superior is up in coronal and sagittal slices (sagittal: anterior on the left). Letters "
            "at the edges name the patient side. Pixels are square; each thumbnail shows its slice's whole field "
            "of view; the yellow bar is the scale in mm. Windows: CT " + ", ".join(
                f"{k.replace('_', ' ')} L {lv:g}/W {w:g} HU" for k, (lv, w) in display.CT_WINDOWS.items())
            + " (as configured); PET from SUV 0; MR between percentiles of the foreground.")


def page(cards, problems: list[dict], metrics: list[str], effect: dict, ml: dict, settings, title: str,
         generated: str) -> str:
    """The whole HTML document."""
    centres = sorted({c.centre for c in cards})
    modalities = sorted({c.modality for c in cards})
    flags = sorted({f for c in cards for f in c.flags})
    n_masks = sum(c.kind == "mask" for c in cards)
    n_img = len(cards) - n_masks
    n_pat = len({c.patient_id for c in cards})
    bar = (_options("centre", centres) + _options("modality", modalities)
           + _options("flag", flags, [("__any__", "(any flag)"), ("__none__", "(no flag)")])
           + _options("status", ["done", "skipped", "failed"]) + '<span id="shown" class="muted"></span>')
    probs = "".join(f'<li data-case="{e(p["case"])}"><b class="st-{e(p["status"])}">{e(p["status"])}</b> '
                    f'[{e(p["stage"])}] {e(p["case"])}: {e(p["reason"])}</li>' for p in problems)
    mask_cards = "".join(_card(c) for c in cards if c.kind == "mask")
    image_cards = "".join(_card(c) for c in cards if c.kind == "image")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{e(title)}</title><style>{CSS}</style></head><body>
<header><h1>{e(title)}</h1><div>{n_pat} patients, {n_masks} masks, {n_img} images without a mask; {len(problems)} skipped or failed cases. Generated {e(generated)} by biomarkers. Identifiers are pseudonyms.</div></header>
<section id="conventions"><b>Display.</b> {e(conventions())}</section>
<div class="bar">{bar}</div>
<section><h2>Cohort</h2>{_table(cards, metrics)}</section>
<section><h2>Distributions per centre and scanner</h2><p class="muted">One column per centre and scanner; red rings: robust z-score above {settings.outlier_z:g} within the centre (same modality), also flagged <span class="flag">outlier</span> on the card.</p><div class="plots" id="distributions">{_distributions(cards, metrics)}</div></section>
<section><h2>Centre effect</h2>{_centre_effect(effect)}</section>
<section id="mlflow"><h2>MLflow runs</h2>{_mlflow(ml)}</section>
<section><h2>Masks</h2><div class="cards" id="mask-cards">{mask_cards or '<p class="muted">No mask.</p>'}</div></section>
<section><h2>Images without a mask</h2><div class="cards" id="image-cards">{image_cards or '<p class="muted">None.</p>'}</div></section>
<section><h2>Skipped and failed cases</h2><ul id="problems">{probs or '<li class="muted">None.</li>'}</ul></section>
<script>{JS}</script></body></html>
"""


__all__ = ["page", "conventions", "status_of", "MASK_VIEWS"]
