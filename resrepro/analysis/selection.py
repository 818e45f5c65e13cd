"""Which runs a report shows: one dataset, per model one setting (the seeds of one experiment), copies once.

Tables and figures both ask :func:`select_runs`, so a table's n and a figure's curves come from the same runs:
a table counts the finished ones, a figure draws them all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from resrepro.analysis.aggregate import Run, setting
from resrepro.models.registry import canonical_model


@dataclass(frozen=True)
class Selection:
    """What :func:`select_runs` chose, and a warning naming each run it left out."""

    dataset: str | None  # the dataset shown; None only when there are no runs and no preferred dataset
    runs: dict[str, list[Run]]  # canonical model name -> the runs of its shown setting, by seed then path
    left_out: list[str]  # runs on another split, copies, runs on other datasets
    other_settings: dict[str, str]  # canonical model name -> the warning naming its settings not shown

    @property
    def warnings(self) -> list[str]:
        return [*self.left_out, *self.other_settings.values()]

    def of(self, model: str) -> tuple[list[Run], list[str]]:
        """The shown runs of ``model`` (any spelling), and the warning naming its other settings, if any."""
        key = canonical_model(model)
        return self.runs.get(key, []), [self.other_settings[key]] if key in self.other_settings else []


def select_runs(runs: Sequence[Run], models: Iterable[str], *, dataset: str | None = None,
                preferred_dataset: str | None = None, split: str | None = None) -> Selection:
    """The runs of ``models`` that a report shows, finished or not.

    - With ``split``, only runs evaluated on it (an unfinished run, whose split is not known yet, stays).
    - A run directory copied twice (same setting and config_hash) counts once: a finished copy, else the
      first path.
    - One dataset: ``dataset`` if given, else ``preferred_dataset`` (the paper's) if it has runs, else the one
      with most runs (ties: by name).
    - Per model one setting (:func:`~resrepro.analysis.aggregate.setting`), never a mix: the longest-trained
      (config ``iters``), then the one with most runs, then the smallest setting key, so that the choice never
      depends on the order in which directories are found.
    """
    wanted = {canonical_model(m) for m in models}
    left_out: list[str] = []
    eligible = []
    for r in runs:
        if r.model not in wanted:
            continue
        if split and r.finished and r.eval_split != split:
            left_out.append(f"evaluated on {r.eval_split}, not {split}; not counted: {r.path}")
        else:
            eligible.append(r)
    unique, copies = _drop_copies(eligible)
    dataset, why = _choose_dataset(unique, dataset, preferred_dataset)
    per_model: dict[str, list[Run]] = {}
    for r in unique:
        if r.dataset == dataset:
            per_model.setdefault(r.model, []).append(r)
    chosen, other_settings = {}, {}
    for model in sorted(per_model):
        chosen[model], warning = _one_setting(model, per_model[model])
        if warning:
            other_settings[model] = warning
    return Selection(dataset, chosen, left_out + copies + why, other_settings)


def _drop_copies(runs: Iterable[Run]) -> tuple[list[Run], list[str]]:
    """One run per (setting, config_hash): a copied directory would otherwise count as another seed."""
    kept: dict[tuple[str, str], Run] = {}
    unique, warnings = [], []
    for r in sorted(runs, key=lambda r: (not r.finished, str(r.path))):
        config_hash = r.config.get("config_hash")
        key = (setting(r.config), str(config_hash))
        if config_hash is not None and key in kept:
            warnings.append(f"same config_hash as another run (a copy?), counted once: {r.path}")
            continue
        kept[key] = r
        unique.append(r)
    return unique, warnings


def _choose_dataset(runs: Sequence[Run], asked: str | None, preferred: str | None) -> tuple[str | None, list[str]]:
    if asked is not None:
        return asked, []
    counts = Counter(r.dataset for r in runs)
    if not counts:
        return preferred, []
    chosen = preferred if preferred in counts else min(counts, key=lambda d: (-counts[d], d))
    why = [f"no {preferred} runs"] if preferred is not None and preferred not in counts else []
    if len(counts) > 1:
        found = ", ".join(f"{d}: {n}" for d, n in sorted(counts.items()))
        why.append(f"runs on several datasets ({found} runs)")
    return chosen, [f"{'; '.join(why)}; showing {chosen}, choose with --dataset"] if why else []


def _one_setting(model: str, runs: Sequence[Run]) -> tuple[list[Run], str | None]:
    """The runs of the setting shown for ``model``, and a warning naming the runs of its other settings."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(setting(r.config), []).append(r)
    # Several settings of one net (a tiny sweep beside a full one, another width...) are different
    # experiments, never averaged together.
    best = min(groups, key=lambda s: (-_iters(groups[s][0]), -len(groups[s]), s))
    chosen = sorted(groups[best], key=lambda r: (str(r.config.get("seed")), str(r.path)))
    others = sorted(str(r.path) for s, g in groups.items() if s != best for r in g)
    if not others:
        return chosen, None
    length = f"{_iters(chosen[0]):,} iterations" if _iters(chosen[0]) >= 0 else "no recorded length"
    return chosen, (f"{model}: runs with {len(groups)} different settings; showing the one with {length} "
                    f"({len(chosen)} run(s)); {len(others)} run(s) of another setting not counted: "
                    f"{', '.join(others)}")


def _iters(run: Run) -> int:
    """The run's planned length (-1 if its config has none): a setting trained longer is the result."""
    iters = run.config.get("iters")
    return iters if isinstance(iters, int) else -1
