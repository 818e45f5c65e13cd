"""`resrepro models` and the CLI's contract: data on stdout, one red line and exit 2 for bad input, lazy imports."""

import json
import subprocess
import sys

import pandas as pd
import pytest


def resrepro(*args):
    return subprocess.run([sys.executable, "-m", "resrepro", *args], capture_output=True, text=True,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})


def test_models_csv_has_numeric_columns_matching_the_paper():
    res = resrepro("models", "--family", "imagenet", "--format", "csv")
    assert res.returncode == 0, res.stderr
    from io import StringIO

    df = pd.read_csv(StringIO(res.stdout)).set_index("name")
    assert {"params", "macs", "paper_params", "paper_macs"} <= set(df.columns)
    assert df["params"].dtype.kind == "i" and df["paper_macs"].dtype.kind == "f"
    assert df.loc["resnet34-A", "params"] == 21_623_848
    assert df.loc["resnet50", "macs"] == pytest.approx(3.858e9, rel=1e-3)
    assert df.loc["resnet50", "paper_macs"] == 3.8e9
    assert set(df["family"]) == {"imagenet"}


def test_models_json_lists_cifar_nets_with_table6_params():
    res = resrepro("models", "--family", "cifar", "--format", "json")
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["resnet110"]["params"] == 1_727_962 and rows["resnet110"]["paper_params"] == 1.7e6
    assert rows["plain56"]["paper_params"] is None  # the paper prints no count for plain nets: none invented
    assert isinstance(rows["resnet20"]["macs"], int)


@pytest.mark.parametrize("args", [["models", "--family", "foo"], ["models", "--format", "xml"],
                                  ["train", "cifar", "--n", "0"], ["eval", "/nonexistent/run"]])
def test_bad_input_is_one_red_line_and_exit_2(args):
    res = resrepro(*args)
    assert res.returncode == 2
    assert res.stderr.strip().startswith("error:") and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_unknown_model_name_is_a_clear_error():
    from resrepro.errors import ResreproError
    from resrepro.models import resolve

    with pytest.raises(ResreproError, match="resnet20"):
        resolve("resnet2O")


def test_help_imports_no_heavy_library():
    """`resrepro --help` stays instant: importing the CLI loads neither torch nor timm, pandas or matplotlib."""
    code = ("import sys, resrepro.cli; "
            "print(','.join(m for m in ('torch', 'timm', 'pandas', 'matplotlib') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == ""


def test_help_lists_every_command():
    res = resrepro("--help")
    assert res.returncode == 0
    for command in ("models", "train", "eval", "bench", "sweep", "table", "figure", "plot", "layer-response"):
        assert command in res.stdout


def test_models_lists_vgg16_bn_and_a_dash_for_plain_nets_shortcut():
    res = resrepro("models", "--format", "markdown")
    assert res.returncode == 0, res.stderr
    assert "| vgg16-bn " in res.stdout and "nan" not in res.stdout
    row = next(line for line in res.stdout.splitlines() if line.startswith("| plain20 "))
    assert [c.strip() for c in row.strip("|").split("|")][3] == "—"


def test_models_keeps_names_whole_at_80_columns():
    res = subprocess.run([sys.executable, "-m", "resrepro", "models", "--family", "imagenet"], capture_output=True,
                         text=True, env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    assert "resnet152-v1.5" in res.stdout and "vgg16-bn" in res.stdout
