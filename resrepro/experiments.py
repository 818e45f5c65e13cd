"""Experiments: one TOML per paper artefact (``experiments/fig6.toml``, ...) turned into the runs it needs.

    title = "..."                      renders = ["table:table6", "figure:fig6"]
    group = "cifar10"                  runs go to <runs>/<group>/<scale>/<model>-s<seed>, with the group's
                                       settings: groups/<group>.toml beside this file, else the shipped one
    [caveat]  tiny = "..."             per scale, why its tables cannot show the paper's claim there (the nets
                                       too small or too short): first in their caption, word for word
    [[runs]]                           models = [...], seeds = 5 (or [0, 3]), skip_at = ["tiny"],
                                       and any setting for these runs only
    [[claims]]                         the paper's claims these runs test, each decided on the median over seeds:
                                       id, says, metric (a runs_frame column, in %), and either
                                       compare = ["plain56", ">", "plain20"] (right: a net, or a list whose
                                       best counts) or within = ["resnet110", 6.45, 6.77]; optional
                                       margin (points left must clear right by; negative: a tolerance) and
                                       seeds (runs each net needs for a verdict), each a number or a table
                                       per scale ({ tiny = 10.0 }), and at = ["full"] (the scales it holds at)

A group file (``experiments/groups/cifar10.toml``) states the settings of its experiments' shared runs once,
since they are part of each run's config hash:

    [defaults]                         settings of every run (CifarSpec's; ImageNetSpec's for ImageNet nets)
    [scale.tiny] / [scale.full]        settings of one scale
    [scale.tiny.models.vgg16-bn]       settings of one net's runs at one scale (lr = 0.01, say), for the net
                                       whose recipe at that scale is not its group's (a named deviation)

A run's setting comes from its net's table at its scale, else from its scale, else from its [[runs]] block, else
from [defaults]: the scale wins over the [[runs]] block, so a tiny run stays tiny, and a net's own table at that
scale wins over both, since it is the most specific (a shared run's settings then stay the same whichever
experiment plans it, a backbone included).

Two settings are no spec field: ``family = "detection"`` trains Faster R-CNN with the named net as backbone
(default: the net's own family), and ``backbone_group = "imagenet"`` starts each such backbone from that group's
run of the same net (seed 0, same scale), which the experiment then lists, before the runs that need it. An
experiment that names a group must not hold [defaults] or [scale.*] (refused, with the line); one without
``group`` is a group of its own, named after its file, and holds them itself.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from resrepro.errors import ResreproError
from resrepro.paper import CLAIM_OPS, Claim
from resrepro.shipped import shipped_folder
from resrepro.train.spec import SPEC_TYPES, RunSpec

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, packaged as tomli
    import tomli as tomllib

RENDER_KINDS = ("table", "figure")
_TOP_KEYS = ("title", "renders", "group", "caveat", "defaults", "scale", "runs", "claims")
_CLAIM_KEYS = ("id", "says", "metric", "compare", "within", "margin", "seeds", "at")
_GROUP_KEYS = ("defaults", "scale")
_RUN_KEYS = ("models", "seeds", "skip_at")
_MODELS = "models"  # in a [scale.*] table: a table of settings per net, [scale.tiny.models.vgg16-bn]
# `model` and `seed` come from a [[runs]] block's `models` and `seeds`, never from a settings table. A
# setting of either trainer is a known key; the spec of the run's family then says whether it takes it.
_PLAN_KEYS = ("family", "backbone_group")  # settings that choose a trainer or a backbone run, not spec fields
_SETTINGS = tuple(dict.fromkeys([*(f.name for spec in SPEC_TYPES.values()
                                   for f in dataclasses.fields(spec) if f.name not in ("model", "seed")),
                                 *_PLAN_KEYS]))


@dataclass(frozen=True)
class PlannedRun:
    """One run an experiment needs at one scale."""

    name: str  # "resnet110-s3": the run directory's name
    model: str  # canonical registry name
    seed: int
    run_dir_rel: Path  # <group>/<scale>/<name>, relative to the runs root
    settings: dict[str, Any] = field(compare=False)  # everything the TOML set, model and seed included
    spec: RunSpec  # of the model's family (CifarSpec, ImageNetSpec), or DetectionSpec
    backbone: PlannedRun | None = field(default=None, compare=False)  # the ImageNet run a detector starts from


@dataclass(frozen=True)
class Experiment:
    name: str  # the file's stem: "fig6"
    path: Traversable  # a Path, except for a shipped file inside a zipped package
    title: str
    renders: tuple[str, ...]  # "table:table6", "figure:fig6"
    group: str  # runs live in <runs>/<group>/<scale>/, shared by every experiment of the group
    scale: str
    scales: tuple[str, ...]  # every scale the file declares
    runs: tuple[PlannedRun, ...]
    claims: tuple[Claim, ...] = ()  # those that hold at this scale, with its margin and seeds
    caveat: str = ""  # at this scale: why its artefacts cannot show the paper's claim ("": they can)

    @property
    def runs_dir_rel(self) -> Path:
        return Path(self.group) / self.scale

    @property
    def dataset(self) -> str | None:
        """The one dataset all runs of the group use at this scale (None if they mix; backbones of another group
        do not count)."""
        names = {r.spec.dataset for r in self.runs if r.run_dir_rel.parent == self.runs_dir_rel}
        return names.pop() if len(names) == 1 else None


def list_experiments() -> list[str]:
    """Names of the shipped experiments (``experiments/*.toml``), sorted."""
    return sorted(p.name.removesuffix(".toml") for p in shipped_folder("experiments").iterdir()
                  if p.name.endswith(".toml"))


def experiment_path(name: str | Path) -> Traversable:
    """The TOML file of an experiment's name, or a path to any ``.toml`` file.

    A name is looked up in ``./experiments/`` of the working directory first, so a copy there (to change a
    setting, say) wins over the shipped file of the same name.
    """
    if str(name).endswith(".toml"):
        path = Path(name)
        if not path.is_file():
            raise ResreproError(f"experiment file {path} does not exist")
        return path
    own = Path.cwd() / "experiments" / f"{name}.toml"
    if own.is_file():
        return own
    path = shipped_folder("experiments") / f"{name}.toml"
    if not path.is_file():
        known = list_experiments()
        hint = difflib.get_close_matches(str(name), known, n=1)
        also = f" Did you mean {hint[0]}?" if hint else ""
        raise ResreproError(
            f"unknown experiment {name!r}: choose one of {', '.join(known)}, "
            f"or pass a path to a .toml file.{also}"
        )
    return path


def load_experiment(name: str | Path, scale: str = "full", seeds: int | None = None) -> Experiment:
    """Read an experiment at one scale; ``seeds=K`` gives every model the seeds 0..K-1 instead."""
    path = experiment_path(name)
    ctx, doc = _read(path)
    if seeds is not None and seeds < 1:
        raise ResreproError(f"--seeds must be at least 1, got {seeds}")
    ctx.check_keys(doc, _TOP_KEYS, "the top level")
    title = ctx.get(doc, "title", str, "the top level", default=_stem(path))
    renders = ctx.get(doc, "renders", list, "the top level", default=[])
    for entry in renders:
        if not isinstance(entry, str) or entry.partition(":")[0] not in RENDER_KINDS or ":" not in entry:
            raise ctx.error(f"renders: {entry!r} should read 'table:NAME' or 'figure:NAME'", "renders")
    group = ctx.get(doc, "group", str, "the top level", default=_stem(path))
    _check_name(ctx, "group", group)
    defaults, scales = _group_settings(ctx, doc, group)
    if scale not in scales:
        raise ResreproError(f"{_show(path)} has no scale {scale!r}: choose {', '.join(sorted(scales))}")
    blocks = ctx.get(doc, "runs", list, "the top level", default=[])
    if not blocks:
        raise ctx.error("lists no runs: add [[runs]] blocks with models = [...]", "runs")

    runs: list[PlannedRun] = []
    for i, block in enumerate(blocks, 1):
        where = f"[[runs]] block {i}"
        if not isinstance(block, dict):
            raise ctx.error(f"{where} should be a table", "runs")
        ctx.check_keys(block, _RUN_KEYS + _SETTINGS, where)
        models = ctx.get(block, "models", list, where)
        skip_at = ctx.get(block, "skip_at", list, where, default=[])
        for s in skip_at:
            if s not in scales:
                raise ctx.error(f"{where}: skip_at names unknown scale {s!r}", "skip_at")
        if scale in skip_at:
            continue
        extra = {k: v for k, v in block.items() if k not in _RUN_KEYS}
        settings = {**defaults, **extra, **scales[scale]}  # the scale wins, so a tiny run stays tiny
        for model in models:
            for seed in _seeds(ctx, block, where) if seeds is None else range(seeds):
                run = _planned(ctx, model, seed, settings, group, scale, where)
                runs += [run] if run.backbone is None else [run.backbone, run]
    by_name: dict[Path, PlannedRun] = {}  # by directory: a backbone and its detector share a name
    for r in runs:
        if r.run_dir_rel in by_name and by_name[r.run_dir_rel].settings != r.settings:
            raise ctx.error(f"run {r.name} is listed twice with different settings", r.model)
        by_name.setdefault(r.run_dir_rel, r)
    claims = _claims(ctx, ctx.get(doc, "claims", list, "the top level", default=[]), scale, scales)
    return Experiment(_stem(path), path, title, tuple(renders), group, scale, tuple(sorted(scales)),
                      tuple(by_name.values()), claims, _caveat(ctx, doc, scale, scales))


def _caveat(ctx: _Context, doc: dict, scale: str, scales: dict[str, Any]) -> str:
    """The experiment's ``caveat`` at ``scale``: a table of one sentence per scale, "" for a scale it omits."""
    table = ctx.get(doc, "caveat", dict, "the top level", default={})
    for s, text in table.items():
        if s not in scales:
            raise ctx.error(f"caveat names unknown scale {s!r}", "caveat")
        if not isinstance(text, str) or not text.strip():
            raise ctx.error(f"caveat.{s} should be a sentence (a string), got {text!r}", "caveat")
    return table.get(scale, "").strip()


def _claims(ctx: _Context, blocks: list, scale: str, scales: dict[str, Any]) -> tuple[Claim, ...]:
    """The [[claims]] that hold at ``scale``, with that scale's margin and seeds."""
    claims, ids = [], set()
    for i, block in enumerate(blocks, 1):
        where = f"[[claims]] block {i}"
        if not isinstance(block, dict):
            raise ctx.error(f"{where} should be a table", "claims")
        ctx.check_keys(block, _CLAIM_KEYS, where)
        cid = ctx.get(block, "id", str, where)
        if cid in ids:
            raise ctx.error(f"{where}: id {cid!r} is used twice", cid)
        ids.add(cid)
        at = ctx.get(block, "at", list, where, default=list(scales))
        for s in at:
            if s not in scales:
                raise ctx.error(f"{where}: at names unknown scale {s!r}", "at")
        fields: dict[str, Any] = {"id": cid, "says": ctx.get(block, "says", str, where),
                                  "metric": ctx.get(block, "metric", str, where)}
        if ("compare" in block) == ("within" in block):
            raise ctx.error(f"{where} needs one of compare = [NET, OP, NET] or within = [NET, LOW, HIGH]", cid)
        if "compare" in block:
            left, op, right = _triple(ctx, block, "compare", where)
            right = [right] if isinstance(right, str) else right
            if op not in CLAIM_OPS or not isinstance(left, str) or not right or \
                    not all(isinstance(r, str) for r in right):
                raise ctx.error(f"{where}: compare should read [NET, OP, NET or [NETS]] with OP one of "
                                f"{', '.join(CLAIM_OPS)}, got {block['compare']!r}", "compare")
            fields |= {"left": left, "op": op, "right": tuple(right)}
        else:
            left, low, high = _triple(ctx, block, "within", where)
            if not isinstance(left, str) or not all(isinstance(v, (int, float)) for v in (low, high)) or low > high:
                raise ctx.error(f"{where}: within should read [NET, LOW, HIGH], got {block['within']!r}", "within")
            fields |= {"left": left, "low": float(low), "high": float(high)}
        fields["margin"] = float(_per_scale(ctx, block, "margin", (int, float), 0, scale, scales, where))
        fields["seeds"] = _per_scale(ctx, block, "seeds", int, 1, scale, scales, where)
        if fields["seeds"] < 1:
            raise ctx.error(f"{where}: seeds should be at least 1", "seeds")
        if scale in at:
            claims.append(Claim(**fields))
    return tuple(claims)


def _triple(ctx: _Context, block: dict, key: str, where: str) -> list:
    value = block[key]
    if not isinstance(value, list) or len(value) != 3:
        raise ctx.error(f"{where}: {key} should be a list of three, got {value!r}", key)
    return value


def _per_scale(ctx: _Context, block: dict, key: str, kind: Any, default: Any, scale: str,
               scales: dict[str, Any], where: str) -> Any:
    """A claim's setting: one value, or a table of values per scale (a scale it omits: ``default``)."""
    value = block.get(key, default)
    if isinstance(value, dict):
        for s in value:
            if s not in scales:
                raise ctx.error(f"{where}: {key} names unknown scale {s!r}", key)
        value = value.get(scale, default)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ctx.error(f"{where}: {key} should be a number or a table of numbers per scale, got {value!r}", key)
    return value


def group_settings(group: str, scale: str) -> dict[str, Any]:
    """The settings every run of ``group`` has at ``scale`` (its [defaults], then its [scale.<scale>]): what
    `resrepro train cifar --dataset digits` takes from the tiny scale."""
    path = _group_file(_Context(shipped_folder("experiments") / f"{group}.toml", ""), group)
    ctx, doc = _read(path)
    defaults, scales = _group_settings(ctx, doc, group)
    if scale not in scales:
        raise ResreproError(f"{_show(path)} has no scale {scale!r}: choose {', '.join(sorted(scales))}")
    return _without_models({**defaults, **scales[scale]})


def _read(path: Traversable) -> tuple[_Context, dict[str, Any]]:
    text = path.read_bytes().decode("utf-8", errors="replace")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:  # its message ends "(at line L, column C)"
        raise ResreproError(f"{_show(path)}: malformed TOML: {e}") from None
    return _Context(path, text), doc


def _group_settings(ctx: _Context, doc: dict, group: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """[defaults] and every [scale.*]: from the group's file if the experiment names a group, else its own."""
    if "group" in doc:
        path = _group_file(ctx, group)
        for key in _GROUP_KEYS:
            if key in doc:
                sub = doc[key]  # named by its first table, [scale.tiny], whose line the message can give
                table = f"scale.{next(iter(sub))}" if key == "scale" and isinstance(sub, dict) and sub else key
                raise ctx.error(f"[{table}] restates group {group!r}, whose settings (part of every shared run's "
                                f"config hash) {_show(path)} states once: change them there, or per run in a "
                                "[[runs]] block", table)
        ctx, doc = _read(path)  # the settings come from the group's file instead
        ctx.check_keys(doc, _GROUP_KEYS, "a group file")
    defaults = ctx.settings(ctx.get(doc, "defaults", dict, "the top level", default={}), "[defaults]")
    scales = {"full": {}}  # a file need not spell out an empty [scale.full]
    for s, table in ctx.get(doc, "scale", dict, "the top level", default={}).items():
        _check_name(ctx, "scale", s)
        if not isinstance(table, dict):
            raise ctx.error(f"scale.{s} should be a table ([scale.{s}])", s)
        models = table.get(_MODELS, {})
        if not isinstance(models, dict) or not all(isinstance(t, dict) for t in models.values()):
            raise ctx.error(f"{_MODELS} in [scale.{s}] should hold one table per net ([scale.{s}.{_MODELS}.NET])",
                            _MODELS)
        scales[s] = ctx.settings({k: v for k, v in table.items() if k != _MODELS}, f"[scale.{s}]")
        if models:  # kept beside the scale's settings; _planned applies a net's own, and checks its name
            scales[s][_MODELS] = {net: ctx.settings(t, f"[scale.{s}.{_MODELS}.{net}]") for net, t in models.items()}
    return defaults, scales


def _check_name(ctx: _Context, key: str, name: str) -> None:
    """A group or scale names a folder of <runs>/<group>/<scale>/: one plain name, so that no file can put
    runs outside --runs (``../..``, ``/tmp``) or read a group file from elsewhere."""
    if name in ("", ".", "..") or set(name) & set("/\\\0"):
        raise ctx.error(f"{key} {name!r} should be a folder name, without '/' and not '..': it names a folder of "
                        "<runs>/<group>/<scale>/, which stays under --runs", key if key == "group" else name)


def _group_file(ctx: _Context, group: str) -> Traversable:
    shipped = shipped_folder("experiments") / "groups"
    # Beside the experiment first, so a folder of one's own experiments can bring its own groups.
    for folder in ([ctx.path.parent / "groups"] if isinstance(ctx.path, Path) else []) + [shipped]:
        if (folder / f"{group}.toml").is_file():
            return folder / f"{group}.toml"
    known = sorted(p.name.removesuffix(".toml") for p in shipped.iterdir() if p.name.endswith(".toml"))
    hint = difflib.get_close_matches(group, known, n=1)
    also = f" (did you mean {hint[0]}?)" if hint else ""
    raise ctx.error(f"group {group!r} has no groups/{group}.toml beside this file or shipped: name one of "
                    f"{', '.join(known)}{also}, or drop 'group' and state [defaults] and [scale.*] here", "group")


def _planned(ctx: _Context, model: Any, seed: int, settings: dict[str, Any], group: str, scale: str,
             where: str) -> PlannedRun:
    from resrepro.models.registry import resolve  # here, not at the top: it imports torch

    if not isinstance(model, str):
        raise ctx.error(f"{where}: models should be a list of names, got {model!r}", "models")
    try:
        arch = resolve(model)
    except ResreproError as e:
        raise ctx.error(f"{where}: {e}", model) from None
    name = f"{arch.name}-s{seed}"
    full = {**_without_models(settings), **_own_settings(ctx, arch.name, settings, scale),
            "model": arch.name, "seed": seed}
    fields = {k: v for k, v in full.items() if k not in _PLAN_KEYS}
    family = full.get("family", arch.family)
    if family not in SPEC_TYPES:
        raise ctx.error(f"{where}: unknown family {family!r}: choose {', '.join(SPEC_TYPES)}", "family")
    backbone = None
    if "backbone_group" in full:
        from resrepro.train.families import family_of

        if family_of(family).upstream != "backbone_run":
            raise ctx.error(f"{where}: backbone_group is for detection runs (family = \"detection\")",
                            "backbone_group")
        backbone = _backbone(ctx, arch.name, full["backbone_group"], scale, where)
        # Where it lies is relative to the runs root (the sweep resolves it); which weights, and their input
        # normalisation, enter the detector's config hash.
        fields |= {"backbone_run": str(backbone.run_dir_rel), "backbone_hash": backbone.spec.config_hash(),
                   "normalize": backbone.spec.normalize}
    try:
        spec = SPEC_TYPES[family].from_dict(fields)
    except (ResreproError, TypeError, ValueError) as e:
        raise ctx.error(f"{where}: run {name} at scale {scale!r}: {e}") from None
    if backbone is not None and backbone.spec.width != spec.width:
        raise ctx.error(f"{where}: run {name} at scale {scale!r} has width {spec.width}, its backbone "
                        f"{backbone.run_dir_rel} width {backbone.spec.width}: they must agree", "width")
    return PlannedRun(name, arch.name, seed, Path(group) / scale / name, full, spec, backbone)


def _own_settings(ctx: _Context, model: str, settings: dict[str, Any], scale: str) -> dict[str, Any]:
    """The settings of ``model``'s own table at ``scale`` ([scale.tiny.models.vgg16-bn]), none if it has none;
    a table naming an unknown net, or a net by another name than its canonical one, is refused."""
    from resrepro.models.registry import resolve

    tables = settings.get(_MODELS, {})
    for net in tables:
        where = f"[scale.{scale}.{_MODELS}.{net}]"
        try:
            canonical = resolve(net).name
        except ResreproError as e:
            raise ctx.error(f"{where}: {e}", net) from None
        if canonical != net:
            raise ctx.error(f"{where}: name the net as {canonical!r}, as its runs are named", net)
    return tables.get(model, {})


def _without_models(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k != _MODELS}


def _backbone(ctx: _Context, model: str, group: Any, scale: str, where: str) -> PlannedRun:
    """The run of ``model`` (seed 0) that ``group`` holds at ``scale``, with that group's settings."""
    if not isinstance(group, str):
        raise ctx.error(f"{where}: backbone_group should be a group's name, got {group!r}", "backbone_group")
    _check_name(ctx, "group", group)
    defaults, scales = _group_settings(ctx, {"group": group}, group)
    if scale not in scales:
        raise ctx.error(f"{where}: backbone group {group!r} has no scale {scale!r}", "backbone_group")
    return _planned(ctx, model, 0, {**defaults, **scales[scale]}, group, scale, f"{where}, backbone")


def _seeds(ctx: _Context, block: dict, where: str) -> list[int]:
    seeds = block.get("seeds", 1)
    if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1:
        return list(range(seeds))
    if isinstance(seeds, list) and seeds and all(isinstance(s, int) and s >= 0 for s in seeds):
        return list(seeds)
    raise ctx.error(f"{where}: seeds should be a count (seeds = 5) or a list (seeds = [0, 3]), got {seeds!r}",
                    "seeds")


def _stem(path: Traversable) -> str:
    return path.name.removesuffix(".toml")


def _show(path: Traversable) -> str:
    if isinstance(path, Path):
        try:
            return str(path.resolve().relative_to(Path.cwd()))
        except ValueError:
            pass
    return str(path)


class _Context:
    """Error messages that name the file, the table, the key and (when it can be found) its line."""

    def __init__(self, path: Traversable, text: str) -> None:
        self.path, self.lines = path, text.splitlines()

    def error(self, message: str, key: str | None = None) -> ResreproError:
        line = self._line_of(key) if key else None
        at = f" (line {line})" if line else ""
        return ResreproError(f"{_show(self.path)}{at}: {message}")

    def _line_of(self, key: str) -> int | None:
        pattern = re.compile(rf"""^\s*\[*\s*["']?{re.escape(key)}["']?\s*[=.\]]|["']{re.escape(key)}["']""")
        return next((i for i, line in enumerate(self.lines, 1) if pattern.search(line)), None)

    def check_keys(self, table: dict, allowed: tuple[str, ...], where: str) -> None:
        for key in table:
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                also = f"; did you mean {hint[0]!r}?" if hint else ""
                raise self.error(f"unknown key {key!r} in {where}{also}", key)

    def settings(self, table: dict, where: str) -> dict[str, Any]:
        self.check_keys(table, _SETTINGS, where)
        return dict(table)

    def get(self, table: dict, key: str, kind: type, where: str, default: Any = ...) -> Any:
        if key not in table:
            if default is ...:
                raise self.error(f"{where} needs {key!r}")
            return default
        value = table[key]
        if not isinstance(value, kind):
            raise self.error(f"{key!r} in {where} should be a {kind.__name__}, got {value!r}", key)
        return value
