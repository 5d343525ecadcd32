"""report.md and a self-contained report.html from one or more summaries ("sections").

A section is one summary with its per-instruction rows: one model of an eval, or "before" /
"after" soft-prompt training. Several sections share the overview table and the gap plot, so the
report doubles as a side-by-side comparison. The document is first built as a list of blocks
(heading, paragraph, table, image) and then rendered twice: Markdown (plots as PNG files beside
it) and HTML (plots embedded as base64 data URIs; no external assets at all).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from robust_prompt import io_utils
from robust_prompt.eval import plots

MAX_TEXT_CHARS = 160
MACRO_NAMES = {
  "unweighted": "every task weighing the same (unweighted, the default)",
  "weighted": "tasks weighted by their number of examples (--macro weighted)",
}
CI_NAMES = {
  "paired_bootstrap_instructions_and_examples": "paired: instructions + examples",
  "bootstrap_instructions_only": "instructions only",
}


@dataclasses.dataclass(frozen=True)
class ReportSection:
  """One column of the comparison: a label, its summary (one model) and per-instruction rows."""

  label: str
  summary: Mapping[str, Any]
  per_instruction: Sequence[Mapping[str, Any]]


def _pct(x: float | None) -> str:
  return "–" if x is None else f"{100 * x:.1f}"


def _pp(x: float | None) -> str:
  return "–" if x is None else f"{100 * x:+.1f}"


def _gap(g: Mapping[str, Any] | None) -> str:
  if not g or g.get("value") is None:
    return "–"
  ci = g.get("ci95")
  return _pp(g["value"]) + (f" [{_pp(ci[0])}, {_pp(ci[1])}]" if ci else "")


def _mean_std(s: Mapping[str, Any]) -> str:
  if s.get("mean") is None:
    return "–"
  return f"{_pct(s['mean'])} ± {_pct(s['std'])} (n={s['n_instructions']})"


def _text(t: str | None) -> str:
  if not t:
    return ""
  t = " ".join(t.split())
  return t if len(t) <= MAX_TEXT_CHARS else t[: MAX_TEXT_CHARS - 1] + "…"


def _slug(label: str) -> str:
  return "".join(c if c.isalnum() else "_" for c in label).strip("_") or "section"


def plot_names(labels: Sequence[str], prefix: str = "accuracy_") -> list[str]:
  """One distinct PNG file name per section label: `<prefix><slug>.png`.

  Slugs keep only letters and digits, so different labels can share one ("T0" and "T0++" are
  both "T0"; "T0" and "t0" differ only in case, which collides on case-insensitive file
  systems). Such labels get a short digest of the label appended, e.g. `accuracy_T0_3f2a9c1e.png`
  (a label given twice gets `_2`, `_3`, ... after that).
  """
  slugs = [_slug(label) for label in labels]
  count: dict[str, int] = {}
  for slug in slugs:
    count[slug.lower()] = count.get(slug.lower(), 0) + 1
  names, taken = [], set()
  for label, slug in zip(labels, slugs):
    if count[slug.lower()] > 1:
      slug += "_" + hashlib.sha1(label.encode("utf-8")).hexdigest()[:8]
    name, k = f"{prefix}{slug}.png", 1
    while name.lower() in taken:  # the very same label twice: number the repeats
      k += 1
      name = f"{prefix}{slug}_{k}.png"
    taken.add(name.lower())
    names.append(name)
  return names


def _overview_row(s: ReportSection, tasks: str, m: Mapping[str, Any]) -> list[str]:
  c = m["consistency"]
  return (
    [s.label, s.summary.get("model", ""), f"{tasks} ({m['n_tasks']})", _mean_std(m["observed"])]
    + [_mean_std(m["unobserved"]), _gap(m["gap"]), _pct(m["pdr"]), _pct(m["cps"])]
    + [f"{_pct(c['observed']['all_agree'])} / {_pct(c['unobserved']['all_agree'])}"]
    + [" + ".join(CI_NAMES.get(x, x) for x in (m["gap"]["ci_method"] or "–").split("+"))]
  )


def _blocks(sections: Sequence[ReportSection], title: str) -> list[tuple]:
  first = sections[0].summary.get("settings", {})
  b: list[tuple] = [("h", 1, title)]
  b.append(
    (
      "p",
      "Accuracies in % (one value per instruction, averaged over its examples); gaps in "
      "percentage points (observed − unobserved; > 0 means unseen phrasings do worse), with "
      f"{int(100 * first.get('ci_level', 0.95))}% bootstrap intervals "
      f"({first.get('n_resamples')} resamples, seed {first.get('seed')}). std is the sample std "
      "over instructions. Macro = mean over instructions within a task, then over tasks, "
      + MACRO_NAMES.get(first.get("macro", "unweighted"), str(first.get("macro")))
      + "; the macro interval resamples instructions jointly across the tasks that share them. "
      "Formulas: docs/metrics.md.",
    )
  )
  header = ["section", "model", "tasks", "observed", "unobserved", "gap [95% CI]", "PDR", "CPS"]
  header += ["all agree (obs/unobs)", "CI method"]
  rows = []
  for s in sections:
    groups = [("all tasks", s.summary["macro"])]
    benchmarks = s.summary.get("benchmarks") or {}
    if len(benchmarks) > 1:
      groups += list(benchmarks.items())
    rows += [_overview_row(s, name, m) for name, m in groups]
  b += [("h", 2, "Overview (macro over tasks)"), ("table", header, rows)]

  png = plots.gap_with_ci([(s.label, s.summary) for s in sections])
  b.append(("img", "gap.png", png, "gap per task with 95% CI"))
  if len(sections) > 1:
    tasks = sorted({t for s in sections for t in s.summary["tasks"]})
    header = ["task"] + [f"{s.label}: obs / unobs (gap)" for s in sections]
    rows = []
    for t in tasks:
      row = [t]
      for s in sections:
        v = s.summary["tasks"].get(t)
        row.append(
          "–"
          if v is None
          else f"{_pct(v['observed']['mean'])} / {_pct(v['unobserved']['mean'])} "
          f"({_pp(v['gap']['value'])})"
        )
      rows.append(row)
    b += [("h", 2, "Per-task comparison"), ("table", header, rows)]
  for s, name in zip(sections, plot_names([s.label for s in sections])):
    b += _section_blocks(s, name)
  return b


def _section_blocks(s: ReportSection, plot_name: str) -> list[tuple]:
  summ = s.summary
  b: list[tuple] = [("h", 2, f"{s.label}" + (f" — {summ['model']}" if summ.get("model") else ""))]
  png = plots.accuracy_by_instruction(
    s.per_instruction, summ, title=f"Accuracy per instruction: {s.label}"
  )
  b.append(("img", plot_name, png, f"accuracy per instruction ({s.label})"))
  header = ["instruction", "task", "split", "source", "accuracy", "text"]
  worst = [
    [w["instruction_id"], w["task"], w["split"], w["source"], _pct(w["accuracy"]), _text(w["text"])]
    for w in summ["macro"]["worst"]
  ]
  b += [("h", 3, "Worst instructions (over all tasks)"), ("table", header, worst)]
  header = ["task", "observed", "unobserved", "min", "gap [95% CI]", "PDR", "CPS"]
  header += ["pairwise agree (obs/unobs)", "worst instruction"]
  rows = []
  for t, v in summ["tasks"].items():
    mins = [v[sp]["min"] for sp in ("observed", "unobserved") if v[sp]["min"] is not None]
    c = v["consistency"]
    w = v["worst"][0] if v["worst"] else None
    rows.append(
      [t, _mean_std(v["observed"]), _mean_std(v["unobserved"]), _pct(min(mins) if mins else None)]
      + [_gap(v["gap"]), _pct(v["pdr"]), _pct(v["cps"])]
      + [f"{_pct(c['observed']['pairwise'])} / {_pct(c['unobserved']['pairwise'])}"]
      + [f"{w['instruction_id']} ({_pct(w['accuracy'])})" if w else "–"]
    )
  b += [("h", 3, "Per task"), ("table", header, rows)]
  cut = summ.get("truncation")
  if cut:
    rows = [
      [t, str(c["rows"]), str(c["inputs_truncated"]), str(c["options_truncated"])]
      for t, c in sorted(cut.items())
    ]
    b += [
      ("h", 3, "Truncation"),
      (
        "p",
        "Rows whose input was longer than max_input_length, and options longer than "
        "max_target_length, over all instructions: their scores are of the truncated text "
        "(docs/metrics.md).",
      ),
      ("table", ["task", "rows", "inputs truncated", "options truncated"], rows),
    ]
  return b


def _md_cell(x: str) -> str:
  return str(x).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[tuple], image_dir: str = "plots") -> str:
  """Markdown with images referenced as files under `image_dir` (relative to report.md)."""
  out = []
  for block in blocks:
    kind = block[0]
    if kind == "h":
      out.append("#" * block[1] + " " + block[2])
    elif kind == "p":
      out.append(block[1])
    elif kind == "table":
      header, rows = block[1], block[2]
      lines = ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + "---|" * len(header)]
      lines += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows]
      out.append("\n".join(lines) if rows else "(none)")
    elif kind == "img":
      out.append(f"![{block[3]}]({image_dir}/{block[1]})")
  return "\n\n".join(out) + "\n"


_CSS = (
  "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
  "table{border-collapse:collapse;font-size:13px;margin:1em 0}"
  "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}"
  "th{background:#f3f3f3}img{max-width:100%}"
)


def render_html(blocks: Sequence[tuple], title: str) -> str:
  """A single self-contained HTML page (inline CSS, PNGs as data URIs)."""
  e = html.escape
  out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)}</title>"]
  out.append(f"<style>{_CSS}</style></head><body>")
  for block in blocks:
    kind = block[0]
    if kind == "h":
      out.append(f"<h{block[1]}>{e(block[2])}</h{block[1]}>")
    elif kind == "p":
      out.append(f"<p>{e(block[1])}</p>")
    elif kind == "table":
      head = "".join(f"<th>{e(str(h))}</th>" for h in block[1])
      body = "".join(
        "<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in block[2]
      )
      out.append(f"<table><tr>{head}</tr>{body}</table>" if block[2] else "<p>(none)</p>")
    elif kind == "img":
      data = base64.b64encode(block[2]).decode("ascii")
      out.append(f"<img alt='{e(block[3])}' src='data:image/png;base64,{data}'>")
  out.append("</body></html>")
  return "\n".join(out) + "\n"


def write_report(
  output_dir: str | pathlib.Path,
  sections: Sequence[ReportSection | tuple],
  *,
  title: str = "Instruction-robustness report",
) -> dict[str, pathlib.Path]:
  """Writes report.md, plots/*.png and report.html into `output_dir` (atomically, each file).

  Args:
    sections: `ReportSection`s or (label, summary, per_instruction rows) tuples.

  Returns:
    name -> path of every file written.
  """
  sections = [s if isinstance(s, ReportSection) else ReportSection(*s) for s in sections]
  if not sections:
    raise ValueError("a report needs at least one section")
  out = io_utils.check_writable_dir(output_dir)
  blocks = _blocks(sections, title)
  written = {}
  (out / "plots").mkdir(exist_ok=True)
  for block in blocks:
    if block[0] == "img":
      written[f"plots/{block[1]}"] = io_utils.atomic_write_bytes(out / "plots" / block[1], block[2])
  written["report.md"] = io_utils.atomic_write_text(out / "report.md", render_markdown(blocks))
  written["report.html"] = io_utils.atomic_write_text(
    out / "report.html", render_html(blocks, title)
  )
  return written
