"""`resrepro report`: one static page of every artefact that has runs — each table with the paper's numbers
beside ours, each figure with its caption, and the commands, hardware and versions that made them.

Each artefact is first re-rendered from its run directories into OUT/<name>/<scale>/ by the renderers `resrepro
sweep` uses; the page is then assembled from those files, so it also shows artefacts rendered earlier whose runs
are not at hand (a fresh clone's committed results). The HTML embeds its images as data URIs and loads nothing
else: it opens from a file, offline. Its Markdown twin links the images beside it.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resrepro.errors import ResreproError
from resrepro.io import write_text
from resrepro.report.provenance import PROVENANCE, machine, sweep_command

PAGE = "report"  # OUT/report.html and OUT/report.md
# The paper's order, so the page reads like the paper.
ORDER = ("fig1", "table2", "table3", "fig4", "table4", "table5", "table6", "fig6", "fig7", "ablation-cifar", "table7",
         "table8")


@dataclass
class Artefact:
    name: str  # the experiment: table6, fig6, ...
    group: str  # its runs' group: artefacts of one group and scale share runs
    scale: str
    title: str
    folder: Path  # OUT/<name>/<scale>
    tables: list[Path] = field(default_factory=list)  # Markdown tables
    figures: list[tuple[Path, Path]] = field(default_factory=list)  # (PNG, its Markdown caption)
    command: str = ""
    provenance: dict[str, Any] | None = None  # PROVENANCE's content; None: not recorded
    verdicts: list[str] = field(default_factory=list)  # "holds", "fails", ...: one per claim, from <what>_claims.csv

    @property
    def anchor(self) -> str:
        return f"{self.name}-{self.scale}"


def build_report(runs_root: str | Path | None, out: str | Path, *, force: bool = False
                 ) -> tuple[list[Path], list[str]]:
    """Re-render every experiment with runs under ``runs_root`` into ``out`` (one built from fewer runs than
    the artefact there into its ``partial/``, unless ``force``), then write OUT/report.html and OUT/report.md of
    every artefact ``out`` holds. Returns the files written and the warnings."""
    from resrepro.experiments import list_experiments, load_experiment

    out = Path(out)
    artefacts, written, warnings = [], [], []
    names = sorted(list_experiments(), key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    for name in names:
        for scale in load_experiment(name).scales:
            exp = load_experiment(name, scale)
            folder = out / name / scale
            if runs_root is not None:
                files, notes = _render(exp, Path(runs_root), folder, force)
                written += files
                warnings += notes
            artefact = _collect(exp, folder, runs_root)
            if artefact.tables or artefact.figures:
                artefacts.append(artefact)
    warnings = list(dict.fromkeys(warnings))  # experiments of one group meet the same damaged folders
    if not artefacts:
        skipped = [w for w in warnings if w.startswith("skipped ")]
        raise ResreproError(f"nothing to report: no runs of any experiment under {runs_root} and no rendered "
                            f"tables or figures in {out} (train some with `resrepro sweep EXPERIMENT`)"
                            + (f"; {len(skipped)} damaged: {'; '.join(skipped)}" if skipped else ""))
    for suffix, text in (("html", to_html(artefacts, out)), ("md", to_markdown(artefacts, out))):
        write_text(out / f"{PAGE}.{suffix}", text)
        written.append(out / f"{PAGE}.{suffix}")
    return written, warnings


def _render(exp: Any, runs_root: Path, folder: Path, force: bool) -> tuple[list[Path], list[str]]:
    """Render the experiment from its runs, if it has any (its renderers record their provenance beside it)."""
    from resrepro.analysis.aggregate import find_runs
    from resrepro.report.render import render_experiment

    runs_dir = runs_root / exp.runs_dir_rel
    models = {r.model for r in exp.runs}
    found, skipped = find_runs(runs_dir) if runs_dir.is_dir() else ([], [])
    if not any(r.model in models for r in found):  # damaged run folders are named, not passed over
        return [], skipped
    files, warnings = render_experiment(exp, runs_root, folder, force=force)
    return files, [f"{exp.name} ({exp.scale}): {w}" for w in warnings]


def _collect(exp: Any, folder: Path, runs_root: str | Path | None) -> Artefact:
    artefact = Artefact(exp.name, exp.group, exp.scale, exp.title, folder, command=sweep_command(exp.name, exp.scale,
                                                                                       runs_root))
    for entry in exp.renders:
        kind, what = entry.split(":", 1)
        md = folder / f"{what}.md"
        if kind == "table" and md.is_file():
            artefact.tables.append(md)
        elif kind == "figure" and md.is_file() and (folder / f"{what}.png").is_file():
            artefact.figures.append((folder / f"{what}.png", md))
        if md.is_file():
            artefact.verdicts += _verdicts(folder / f"{what}_claims.csv")
    try:
        artefact.provenance = json.loads((folder / PROVENANCE).read_text())
    except (OSError, ValueError):
        artefact.provenance = None
    return artefact


def _verdicts(path: Path) -> list[str]:
    """The verdict column of a ``<name>_claims.csv`` (none if it is absent or unreadable)."""
    import csv

    try:
        with path.open(newline="", encoding="utf-8") as f:
            return [row["verdict"] for row in csv.DictReader(f) if row.get("verdict")]
    except (OSError, UnicodeDecodeError, csv.Error, KeyError):
        return []


def _verdict_line(a: Artefact) -> str:
    """"The paper's claims: 2 hold, 1 fails (each below, with its numbers).", or where none were judged."""
    if not a.verdicts:
        return "The paper's claims: not judged in these files (re-render them from runs to judge them)."
    counts = Counter(a.verdicts)
    words = {"holds": ("holds", "hold"), "fails": ("fails", "fail")}
    said = ", ".join(f"{n} {words.get(v, (v, v))[n != 1]}" for v, n in counts.items())
    return f"The paper's claims: **{said}** (each below, with the numbers it was decided on)."


def _demote(text: str) -> str:
    """Headings of a caption two levels down: under the page's title and the artefact's heading."""
    return re.sub(r"^(#{1,4}) ", lambda m: "#" * (len(m[1]) + 2) + " ", text.strip(), flags=re.M)


def _markdown(text: str) -> str:
    """Markdown (our tables and captions) as HTML; raw HTML in it is escaped."""
    from markdown_it import MarkdownIt  # rich's own dependency: no new package for this

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(_demote(text))


def _provenance_lines(a: Artefact) -> list[str]:
    """Markdown lines: the command, this render, and what made the runs, or where to look when not recorded."""
    p = a.provenance
    lines = [f"Reproduce with: `{p['command'] if p else a.command}` (trains what is missing, then renders)"]
    if not p:
        how = " [README.md](README.md) beside this page says how." if (a.folder.parents[1] / "README.md").is_file() \
            else ""
        return lines + ["", f"Runs: not at hand when this page was made; these files were rendered earlier.{how}"]
    r = p.get("rendered") or {}
    lines += ["", f"Runs: {p['runs']} ({p['finished']} finished)."
              + (f" Rendered {r.get('date', '—')} by `{r.get('command', '—')}` at commit "
                 f"`{str(r.get('git_sha'))[:12]}`." if r else "")]
    made = p.get("made_by") or []
    if made:
        lines += ["", "| runs | CPU / device | date | git commit | torch | CUDA | Python | resrepro |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {m['runs']} | {machine(m)} | {' to '.join(dict.fromkeys(m.get('dates') or ['—']))} | "
                  f"`{str(m['git_sha'])[:12]}` | {m['torch']} | {m['cuda']} | {m['python']} | {m['resrepro']} |"
                  for m in made]
    return lines


def _origins(a: Artefact) -> set[tuple[str, str]]:
    """The (machine, commit) pairs an artefact's runs were made with."""
    made = (a.provenance or {}).get("made_by") or []
    return {(machine(m), str(m.get("git_sha"))[:12]) for m in made}


def _side_by_side(a: Artefact, artefacts: list[Artefact]) -> list[str]:
    """A line naming the artefacts of the same group and scale whose runs were made on other machines or
    commits: their numbers sit side by side on this page, but another CPU changes a run's outcome."""
    ours = _origins(a)
    others = [b for b in artefacts if b is not a and b.group == a.group and b.scale == a.scale and _origins(b)
              and ours and _origins(b) != ours]
    if not others:
        return []
    def said(origins: set[tuple[str, str]]) -> str:
        return ", ".join(f"{m} at `{c}`" for m, c in sorted(origins))

    where = "; ".join(f"{b.name}: {said(_origins(b))}" for b in others)
    return ["", f"**Made on other machines or commits than its neighbours** ({said(ours)} here; {where}): compare "
            "their numbers with care."]


def to_markdown(artefacts: list[Artefact], out: Path) -> str:
    lines = ["# He et al. 2015, reproduced: every table and figure", "",
             "Each table shows the paper's numbers beside ours; each figure has its caption. Made by "
             "`resrepro report` from the files beside this page.", ""]
    lines += [f"- [{a.title} ({a.scale})](#{a.anchor})" for a in artefacts]
    for a in artefacts:
        lines += ["", f'<a id="{a.anchor}"></a>', "", f"## {a.title} ({a.scale})", "", _verdict_line(a), ""]
        for t in a.tables:
            lines += [t.read_text().strip(), ""]
        for png, caption in a.figures:
            lines += [f"![{a.title}]({png.relative_to(out).as_posix()})", "", _demote(caption.read_text()), ""]
        lines += _provenance_lines(a) + _side_by_side(a, artefacts)
    return "\n".join(lines) + "\n"


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 75rem; margin: 2rem auto;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2.5rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .25rem .55rem; }
th { background: #f4f4f4; }
td { font-variant-numeric: tabular-nums; }
img { max-width: 100%; max-height: 34rem; width: auto; height: auto; display: block; margin: 1rem 0; }
code { font-size: .85em; background: #f6f6f6; padding: 0 .2em; }
.prov { font-size: .85rem; color: #444; }
"""


def to_html(artefacts: list[Artefact], out: Path) -> str:
    toc = "".join(f'<li><a href="#{a.anchor}">{html.escape(a.title)} ({a.scale})</a></li>' for a in artefacts)
    body = []
    for a in artefacts:
        body.append(f'<section id="{a.anchor}"><h2>{html.escape(a.title)} ({a.scale})</h2>')
        body.append(f'<div class="verdict">{_markdown(_verdict_line(a))}</div>')
        body += [f'<div class="table">{_markdown(t.read_text())}</div>' for t in a.tables]
        for png, caption in a.figures:
            data = base64.b64encode(png.read_bytes()).decode("ascii")
            body.append(f'<figure><img alt="{html.escape(a.title)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{_markdown(caption.read_text())}</figcaption></figure>")
        made = "\n".join(_provenance_lines(a) + _side_by_side(a, artefacts))
        body.append(f'<div class="prov">{_markdown(made)}</div></section>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>He et al. 2015, reproduced</title><style>{CSS}</style></head><body>"
            "<h1>He et al. 2015, reproduced: every table and figure</h1>"
            "<p>Each table shows the paper's numbers beside ours; each figure has its caption. Made by "
            "<code>resrepro report</code>; this page loads nothing from the network.</p>"
            f"<ul>{toc}</ul>{''.join(body)}</body></html>\n")
