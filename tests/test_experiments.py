"""experiments/*.toml: every artefact loads at both scales, into the runs the paper needs."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from resrepro.errors import ResreproError
from resrepro.experiments import experiment_path, list_experiments, load_experiment
from resrepro.models.registry import resolve
from resrepro.train.spec import DetectionSpec, ImageNetSpec

GROUPS = Path(__file__).resolve().parents[1] / "experiments" / "groups"
PAPER_ARTEFACTS = {"fig1", "fig4", "fig6", "fig7", "table2", "table3", "table4", "table5", "table6",
                   "ablation-cifar"}


def test_every_paper_artefact_has_a_file():
    assert set(list_experiments()) >= PAPER_ARTEFACTS


@pytest.mark.parametrize("name", list_experiments())
@pytest.mark.parametrize("scale", ["tiny", "full"])
def test_loads_at_both_scales(name, scale):
    exp = load_experiment(name, scale)
    assert exp.title and exp.renders and exp.runs
    assert {"tiny", "full"} <= set(exp.scales)
    backbones = {r.backbone.run_dir_rel for r in exp.runs if r.backbone is not None}
    for run in exp.runs:
        assert resolve(run.model).name == run.model
        group = exp.group if run.run_dir_rel not in backbones else run.run_dir_rel.parts[0]
        assert run.run_dir_rel == Path(group) / scale / f"{run.model}-s{run.seed}"
        assert (run.spec.model, run.spec.seed) == (run.model, run.seed)
        if not isinstance(run.spec, DetectionSpec):
            assert isinstance(run.spec, ImageNetSpec) == (resolve(run.model).family == "imagenet")
    if scale == "tiny":
        assert exp.dataset in ("digits", "digits-voc", "digits-coco")
        assert all(r.spec.iters <= 1200 and r.spec.width <= 8 for r in exp.runs)


def test_full_scale_is_the_papers_recipe():
    spec = load_experiment("fig1", "full").runs[0].spec
    assert (spec.dataset, spec.iters, spec.batch_size, spec.milestones, spec.width) == (
        "cifar10", 64_000, 128, (32_000, 48_000), 16)


@pytest.mark.parametrize("name", ["table2", "table3", "table4", "table5", "fig4"])
def test_imagenet_experiments_full_is_the_papers_recipe_and_tiny_fits_the_digits(name):
    from resrepro.data.imagenet_digits import SIDE

    for run in load_experiment(name, "full").runs:
        assert run.spec == ImageNetSpec(model=run.model, seed=run.seed)  # §3.4 as the trainer's defaults
    for run in load_experiment(name, "tiny").runs:
        spec = run.spec
        assert (spec.dataset, spec.width) == ("digits", 8)
        assert spec.crop <= spec.scale[0] and spec.scale[0] == SIDE  # the crop never leaves the image


@pytest.mark.parametrize("name, dataset", [("table7", "voc07+12"), ("table8", "coco")])
def test_detection_experiments_list_each_backbone_run_before_its_detector(name, dataset):
    for scale in ("tiny", "full"):
        exp = load_experiment(name, scale)
        detectors = [r for r in exp.runs if isinstance(r.spec, DetectionSpec)]
        assert [r.model for r in detectors] == ["vgg16" if scale == "full" else "vgg16-bn", "resnet101"]
        for det in detectors:
            backbone = exp.runs[exp.runs.index(det) - 1]
            assert backbone is det.backbone and isinstance(backbone.spec, ImageNetSpec)
            assert backbone.run_dir_rel == Path("imagenet") / scale / f"{det.model}-s0"
            assert det.spec.backbone_run == str(backbone.run_dir_rel)  # relative to the runs root
            assert det.spec.backbone_hash == backbone.spec.config_hash()
            assert det.spec.width == backbone.spec.width
    full = [r.spec for r in load_experiment(name, "full").runs if isinstance(r.spec, DetectionSpec)]
    assert all(s == DetectionSpec(model=s.model, dataset=dataset, backbone_run=s.backbone_run,
                                  backbone_hash=s.backbone_hash) for s in full)  # the paper's recipe as defaults


def test_a_detector_must_be_as_wide_as_its_backbone(tmp_path):
    path = _write(tmp_path, GOOD.replace('dataset = "digits"', 'family = "detection"\nbackbone_group = "imagenet"\n'
                                         'dataset = "digits-voc"\nwidth = 16').replace("plain20", "resnet18"))
    with pytest.raises(ResreproError, match="width 16, its backbone imagenet/tiny/resnet18-s0 width 8"):
        load_experiment(path, "tiny")


def test_table6_has_resnet110_over_five_seeds():
    exp = load_experiment("table6", "full")
    seeds = Counter(r.model for r in exp.runs)
    assert seeds["resnet110"] == 5
    others = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet1202")
    assert {m: seeds[m] for m in others} == dict.fromkeys(others, 1)
    assert "table:table6" in exp.renders


def test_fig6_has_the_three_panels_and_tiny_leaves_out_1202():
    full = {r.model for r in load_experiment("fig6", "full").runs}
    plain = {f"plain{d}" for d in (20, 32, 44, 56)}
    assert full == plain | {f"resnet{d}" for d in (20, 32, 44, 56, 110, 1202)}
    assert {r.model for r in load_experiment("fig6", "tiny").runs} == full - {"resnet1202"}


def test_ablation_has_options_a_b_c():
    models = {r.model for r in load_experiment("ablation-cifar", "tiny").runs}
    assert {resolve(m).shortcut for m in models} == {"A", "B", "C"}
    assert {resolve(m).depth for m in models} == {20, 32, 44, 56}


def test_seeds_override():
    exp = load_experiment("table6", "tiny", seeds=2)
    assert Counter(r.model for r in exp.runs) == dict.fromkeys({r.model for r in exp.runs}, 2)


def test_experiments_of_a_group_agree_on_shared_runs():
    # Runs are shared through <runs>/<group>/<scale>/: two files must not ask one directory for two configs.
    for scale in ("tiny", "full"):
        seen: dict[Path, str] = {}
        for name in list_experiments():
            for run in load_experiment(name, scale).runs:
                key = run.spec.config_hash()
                assert seen.setdefault(run.run_dir_rel, key) == key, f"{name}: {run.run_dir_rel}"


@pytest.mark.parametrize("name", list_experiments())
def test_a_groups_file_plans_the_runs_its_settings_stated_in_the_experiment_would(name, tmp_path):
    # Every experiment used to restate its group's [defaults] and [scale.*]. Stating them once in the group's
    # file must not change one run's config hash: that hash is how a sweep recognises the runs already on disk.
    exp = load_experiment(name)
    text = re.sub(r"^group = .*\n", "", experiment_path(name).read_text(), flags=re.M)
    own = tmp_path / f"{name}.toml"
    own.write_text(text + "\n" + (GROUPS / f"{exp.group}.toml").read_text())
    assert load_experiment(own).scales == exp.scales
    for scale in exp.scales:
        grouped = {r.name: r.spec.config_hash() for r in load_experiment(name, scale).runs}
        assert grouped == {r.name: r.spec.config_hash() for r in load_experiment(own, scale).runs}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return path


GOOD = """title = "t"
renders = ["figure:fig1"]
[scale.tiny]
dataset = "digits"
[[runs]]
models = ["plain20"]
"""


def test_a_path_to_a_file_loads(tmp_path):
    exp = load_experiment(_write(tmp_path, GOOD), "tiny")
    assert [r.name for r in exp.runs] == ["plain20-s0"] and exp.group == "exp"


def test_a_copy_in_the_working_directory_wins_over_the_shipped_file(tmp_path, monkeypatch):
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "fig1.toml").write_text(GOOD)
    monkeypatch.chdir(tmp_path)
    exp = load_experiment("fig1", "tiny")
    assert (exp.title, [r.name for r in exp.runs]) == ("t", ["plain20-s0"])
    assert set(list_experiments()) >= PAPER_ARTEFACTS  # still the shipped ones


def test_malformed_toml_names_the_line(tmp_path):
    path = _write(tmp_path, GOOD.replace('dataset = "digits"', "dataset = digits"))
    with pytest.raises(ResreproError, match=r"exp\.toml: malformed TOML: .*line 4"):
        load_experiment(path, "tiny")


@pytest.mark.parametrize("text, key, where, line", [
    (GOOD.replace("[scale.tiny]\n", "[scale.tiny]\nitres = 5\n"), "itres", r"\[scale\.tiny\]", 4),
    (GOOD + "sedes = 3\n", "sedes", r"\[\[runs\]\] block 1", 7),
    ("colour = 1\n" + GOOD, "colour", "the top level", 1),
])
def test_unknown_key_is_named(tmp_path, text, key, where, line):
    with pytest.raises(ResreproError, match=rf"exp\.toml \(line {line}\): unknown key '{key}' in {where}"):
        load_experiment(_write(tmp_path, text), "tiny")


@pytest.mark.parametrize("text, match", [
    (GOOD.replace("plain20", "plain21"), "plain21"),
    (GOOD.replace('"figure:fig1"', '"fig1"'), "table:NAME"),
    (GOOD + "seeds = 0\n", "seeds should be"),
    (GOOD + 'skip_at = ["huge"]\n', "unknown scale 'huge'"),
    (GOOD.replace('"digits"', '"mnist"'), "plain20-s0 at scale 'tiny': unknown dataset"),
    (GOOD.replace("plain20", "resnet18") + "scale = [32, 40]\ncrop = 36\n", "resnet18-s0 .*crop <= low"),
    (GOOD + "crop = 28\n", "plain20-s0 at scale 'tiny': the cifar trainer has no setting crop"),
    (GOOD + "momentum = -1.0\n", r"plain20-s0 at scale 'tiny': momentum must be in \[0, 1\), got -1.0"),
    (GOOD + "lr = nan\n", "lr must be a finite number > 0, got nan"),
    (GOOD + "lr_decay = inf\n", "lr_decay must be a finite number > 0, got inf"),
    (GOOD + "warmup_until_error = 0.0\n", r"warmup_until_error is a training error in \(0, 1\], got 0.0"),
    (GOOD + "warmup_lr = -0.01\n", "warmup_lr must be a finite number > 0"),
    (GOOD + "milestones = [-5]\n", "milestones must be increasing iterations >= 1"),
    (GOOD + 'iters = "abc"\n', "iters should be a 64-bit integer, got 'abc'"),
    (GOOD + 'milestones = ["a"]\n', r"milestones should be a list of integers, got \['a'\]"),
])
def test_bad_values_are_named(tmp_path, text, match):
    with pytest.raises(ResreproError, match=match):
        load_experiment(_write(tmp_path, text), "tiny")


@pytest.mark.parametrize("text, match", [
    ('group = "../../escape"\n' + GOOD, r"exp\.toml \(line 1\): group '\.\./\.\./escape' should be a folder name"),
    ('group = "/tmp"\n' + GOOD, "group '/tmp' should be a folder name"),
    (GOOD.replace("[scale.tiny]", '[scale."../tiny"]'), r"scale '\.\./tiny' should be a folder name"),
])
def test_a_path_from_the_file_never_leaves_the_runs_root(tmp_path, text, match):
    with pytest.raises(ResreproError, match=match):
        load_experiment(_write(tmp_path, text), "tiny")


def test_unknown_experiment_and_scale():
    with pytest.raises(ResreproError, match="unknown experiment 'fig66'.*Did you mean fig6"):
        load_experiment("fig66")
    with pytest.raises(ResreproError, match="no scale 'huge'"):
        load_experiment("fig6", "huge")


ONE_RUN = 'title = "t"\ngroup = "cifar10"\n[[runs]]\nmodels = ["plain20"]\n'


def test_a_file_of_ones_own_naming_a_group_shares_its_settings_and_runs(tmp_path):
    mine = load_experiment(_write(tmp_path, ONE_RUN), "tiny").runs[0]
    fig1 = {r.name: r for r in load_experiment("fig1", "tiny").runs}["plain20-s0"]
    assert (mine.run_dir_rel, mine.spec.config_hash()) == (fig1.run_dir_rel, fig1.spec.config_hash())


def test_a_group_file_beside_the_experiment_wins_over_the_shipped_one(tmp_path):
    (tmp_path / "groups").mkdir()
    (tmp_path / "groups" / "cifar10.toml").write_text('[scale.tiny]\ndataset = "digits"\nwidth = 4\n')
    spec = load_experiment(_write(tmp_path, ONE_RUN), "tiny").runs[0].spec
    assert (spec.dataset, spec.width, spec.iters) == ("digits", 4, 64_000)


@pytest.mark.parametrize("text, match", [
    (ONE_RUN + "[defaults]\nwidth = 8\n",
     r"exp\.toml \(line 5\): \[defaults\] restates group 'cifar10', .*cifar10\.toml states once"),
    (ONE_RUN.replace("[[runs]]", "[scale.tiny]\niters = 10\n[[runs]]"),
     r"exp\.toml \(line 3\): \[scale\.tiny\] restates group 'cifar10'"),
    (ONE_RUN.replace("cifar10", "cifar"), r"exp\.toml \(line 2\): group 'cifar' has no .*did you mean cifar10"),
])
def test_an_experiment_may_not_restate_or_miss_its_groups_settings(tmp_path, text, match):
    with pytest.raises(ResreproError, match=match):
        load_experiment(_write(tmp_path, text), "tiny")


def test_unknown_key_in_a_group_file_is_named(tmp_path):
    (tmp_path / "groups").mkdir()
    (tmp_path / "groups" / "mine.toml").write_text('[defaults]\ndataset = "digits"\n[[runs]]\nmodels = []\n')
    with pytest.raises(ResreproError, match=r"mine\.toml \(line 3\): unknown key 'runs' in a group file"):
        load_experiment(_write(tmp_path, ONE_RUN.replace("cifar10", "mine")), "tiny")


def test_the_tiny_vgg16_bn_backbone_trains_at_the_vgg_papers_lr_and_the_others_at_the_groups():
    # Issue 23: at the group's lr 0.1 the tiny VGG-16-BN diverged on one CPU and stayed near chance on another.
    for name in ("table7", "table8"):
        backbones = {r.model: r.spec for r in load_experiment(name, "tiny").runs if isinstance(r.spec, ImageNetSpec)}
        assert (backbones["vgg16-bn"].lr, backbones["resnet101"].lr) == (0.01, 0.1)
    assert all(r.spec.lr == 0.1 for r in load_experiment("table3", "tiny").runs)


NET_TABLE = GOOD.replace("[[runs]]", '[scale.tiny.models.plain20]\nlr = 0.02\n[[runs]]').replace(
    '["plain20"]', '["plain20", "resnet20"]\nlr = 0.5\nwidth = 4')


def test_a_nets_own_table_at_a_scale_wins_over_the_scale_and_its_runs_block(tmp_path):
    specs = {r.model: r.spec for r in load_experiment(_write(tmp_path, NET_TABLE), "tiny").runs}
    assert (specs["plain20"].lr, specs["resnet20"].lr) == (0.02, 0.5)  # only the net it names
    assert specs["plain20"].width == specs["resnet20"].width == 4
    assert {r.model: r.spec.lr for r in load_experiment(_write(tmp_path, NET_TABLE.replace(
        "[scale.tiny.models", "[scale.full.models")), "tiny").runs} == {"plain20": 0.5, "resnet20": 0.5}


@pytest.mark.parametrize("text, match", [
    (NET_TABLE.replace("models.plain20]", "models.plain21]"), r"\[scale\.tiny\.models\.plain21\]: 'plain21'"),
    (NET_TABLE.replace("models.plain20]", 'models."cifar-plain20"]'), "name the net as 'plain20'"),
    (NET_TABLE.replace("lr = 0.02", "lr = 0.02\nitres = 3"),
     r"unknown key 'itres' in \[scale\.tiny\.models\.plain20\]"),
    (GOOD.replace("[scale.tiny]", "[scale.tiny]\nmodels = 3"), r"\[scale\.tiny\] should hold one table per net"),
])
def test_a_bad_nets_table_is_named(tmp_path, text, match):
    with pytest.raises(ResreproError, match=match):
        load_experiment(_write(tmp_path, text), "tiny")


@pytest.mark.parametrize("name, cannot", [
    ("table2", "cannot show"), ("table3", "cannot be resolved"), ("table4", "cannot show"),
    ("table5", "near 0"), ("table6", "cannot be resolved"), ("ablation-cifar", "cannot be resolved"),
    ("table7", "does not show"), ("table8", "does not show")])
def test_the_tables_whose_claim_the_tiny_scale_cannot_show_say_why_there_only(name, cannot):
    caveat = load_experiment(name, "tiny").caveat
    assert caveat.startswith("At this scale (8") and cannot in caveat and "results/README.md" in caveat
    assert load_experiment(name, "full").caveat == ""


@pytest.mark.parametrize("name", ["table2", "table3", "table6", "fig4"])
def test_each_paper_claim_the_tiny_scale_replaces_is_kept_at_full_scale(name):
    """A claim the tiny scale cannot show (ResNet-34 beating ResNet-18, B beating A, the deeper bottleneck nets'
    order) is not dropped: it holds at the full scale only, and the tiny scale checks what it can in its place."""
    tiny, full = ({c.id for c in load_experiment(name, s).claims} for s in ("tiny", "full"))
    assert full - tiny and tiny - full
    assert all(c.seeds == 3 for c in load_experiment(name, "tiny").claims)  # decided on the median of three seeds


def test_table4_checks_no_claim_at_the_tiny_scale_and_says_why():
    # 28-px crops leave a 1x1 last stage, which test sides above 32 px break: multi-scale testing means nothing there
    assert not load_experiment("table4", "tiny").claims and len(load_experiment("table4", "full").claims) == 3
    assert "2×2 map it never saw" in load_experiment("table4", "tiny").caveat


def test_a_caveat_is_one_sentence_per_scale(tmp_path):
    exp = _write(tmp_path, 'caveat = { tiny = "too short" }\n' + GOOD)
    assert (load_experiment(exp, "tiny").caveat, load_experiment(exp, "full").caveat) == ("too short", "")
    with pytest.raises(ResreproError, match=r"\(line 1\): caveat names unknown scale 'huge'"):
        load_experiment(_write(tmp_path, 'caveat = { huge = "x" }\n' + GOOD), "tiny")
    with pytest.raises(ResreproError, match=r"caveat\.tiny should be a sentence"):
        load_experiment(_write(tmp_path, 'caveat = { tiny = 3 }\n' + GOOD), "tiny")
