"""The ``masktopo`` command: in-process through ``main([...])`` and as a real subprocess."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from cli_helpers import run_masktopo

import masktopo
from masktopo import analysis, examples
from masktopo.cli import analyze as cli_analyze
from masktopo.cli._output import render_rows
from masktopo.cli.main import main
from masktopo.masks import MaskSet

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {"torch", "numpy", "pandas", "scipy", "networkx", "igraph", "matplotlib", "safetensors"}
LAYERS = ["conv1.weight", "fc.weight", "tiny.weight"]


def _maskset(seed: int = 0, *, empty: bool = False) -> MaskSet:
    """Three small layers with weights; ``tiny.weight`` has one output, so most of its spectral
    metrics are undefined (NaN with a reason)."""
    g = torch.Generator().manual_seed(seed)
    masks = {
        "conv1.weight": torch.rand(8, 4, 3, 3, generator=g) < 0.5,
        "fc.weight": torch.rand(10, 8, generator=g) < 0.6,
        "tiny.weight": torch.ones(1, 6, dtype=torch.bool),
    }
    if empty:
        masks["fc.weight"] = torch.zeros(10, 8, dtype=torch.bool)
    weights = {n: torch.randn(m.shape, generator=g) * m for n, m in masks.items()}
    return MaskSet(masks, weights=weights)


@pytest.fixture
def saved(tmp_path) -> Path:
    path = tmp_path / "masks.safetensors"
    masktopo.save(path, _maskset())
    return path


@pytest.fixture
def saved2(tmp_path) -> Path:
    path = tmp_path / "other.safetensors"
    masktopo.save(path, _maskset(seed=1))
    return path


@pytest.fixture(autouse=True)
def _no_terminal_width(monkeypatch):
    """Text tables are fitted to $COLUMNS: these tests set it where they need it."""
    monkeypatch.delenv("COLUMNS", raising=False)


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _assert_user_error(rc, err, *, contains=()):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("masktopo: error: ")
    assert "Traceback" not in err
    for text in contains:
        assert text in lines[0]


# -- help, version, import cost -----------------------------------------------------------------
_PROBE = """
import contextlib, io, json, sys, time
t = time.perf_counter()
from masktopo.cli.main import main
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    rc = main(sys.argv[1:])
elapsed = time.perf_counter() - t
heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY
               or m.startswith(("masktopo.store", "masktopo.analysis", "masktopo.masks")))
print(json.dumps({"rc": rc, "elapsed": elapsed, "heavy": heavy, "out": buf.getvalue()}))
"""


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["analyze", "--help"], ["info", "--help"], ["demo", "--help"], ["--version"]],
)
def test_help_does_not_import_heavy_modules(argv, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = f"HEAVY = {sorted(HEAVY)!r}\n{_PROBE}"
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code, *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    wall = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    probe = json.loads(proc.stdout.strip().splitlines()[-1])
    assert probe["rc"] == 0
    assert probe["heavy"] == []
    assert probe["elapsed"] < 0.5  # importing the CLI and printing help, without interpreter start
    assert wall < 5  # the whole process; loose, for loaded CI machines
    assert "masktopo" in probe["out"]


def test_help_lists_subcommands_and_options(capsys):
    rc, out, _ = _run(capsys, "--help")
    assert rc == 0
    for cmd in ("analyze", "info", "demo"):
        assert cmd in out
    rc, out, _ = _run(capsys, "analyze", "--help")
    assert rc == 0
    for opt in ("--conv", "--no-weights", "--format", "--out", "--metrics", "--device"):
        assert opt in out


def test_version(capsys):
    rc, out, _ = _run(capsys, "--version")
    assert rc == 0
    assert masktopo.__version__ in out


def test_no_command_is_a_usage_error(capsys):
    rc, _, err = _run(capsys)
    assert rc == 2
    assert "usage:" in err and "Traceback" not in err


# -- info -----------------------------------------------------------------------------------------
def test_info(capsys, saved):
    rc, out, err = _run(capsys, "info", saved)
    assert rc == 0, err
    ms = masktopo.load(saved)
    assert str(saved) in out
    assert "weights: yes" in out
    assert "safetensors" in out
    for name in ms:
        line = next(line for line in out.splitlines() if line.split()[:1] == [name])
        assert "x".join(map(str, ms.shape(name))) in line
        assert str(ms.nnz(name)) in line.split()


def test_info_json_several(capsys, saved, saved2):
    rc, out, err = _run(capsys, "info", "--json", saved, saved2)
    assert rc == 0, err
    infos = json.loads(out)
    assert [Path(i["path"]) for i in infos] == [saved, saved2]
    for info in infos:
        assert info["n_layers"] == 3
        assert [layer["name"] for layer in info["layers"]] == LAYERS


# -- analyze --------------------------------------------------------------------------------------
def test_analyze_table(capsys, saved):
    rc, out, err = _run(capsys, "analyze", saved)
    assert rc == 0, err
    lines = out.splitlines()
    header = lines[0].split()
    assert header[:3] == ["layer", "shape", "density"]
    assert "mu0" in header and "reason" in header
    assert "kind" not in header and "n_edges" not in header  # the compact default set
    assert [line.split()[0] for line in lines[1:]] == [*LAYERS, "(network)"]
    tiny = next(line for line in lines if line.startswith("tiny.weight"))
    assert "nan" in tiny.split()  # undefined metrics are shown as nan, with a reason
    # The network row has no shape: its next cell is the global density.
    density = _maskset().density()
    assert lines[-1].split()[:2] == ["(network)", format(density, ".6g")]


def test_analyze_table_selected_metrics(capsys, saved):
    rc, out, err = _run(capsys, "analyze", saved, "--metrics", "n_edges,mu0")
    assert rc == 0, err
    assert out.splitlines()[0].split() == ["layer", "shape", "n_edges", "mu0", "reason"]


def test_analyze_csv_matches_library(capsys, saved):
    rc, out, err = _run(capsys, "analyze", saved, "--format", "csv")
    assert rc == 0, err
    df = pd.read_csv(io.StringIO(out))
    expected = analysis.analyze(masktopo.load(saved))
    assert list(df["layer"]) == [*LAYERS, "(network)"]
    assert list(df["level"]) == ["layer"] * 3 + ["network"]
    network_only = ("ramanujan_fraction", "n_layers")
    assert [c for c in df.columns if c not in network_only] == ["level", *expected.columns]
    at = list(df.columns).index("is_ramanujan")
    assert df.columns[at + 1] == "ramanujan_fraction"
    assert list(df.columns[-2:]) == ["n_layers", "reason"]
    for col in ("mu0", "mu_hat", "weighted_mu0", "n_edges", "density"):
        got = df[col].iloc[:-1].to_numpy(float)
        want = expected[col].to_numpy(float)
        assert got == pytest.approx(want, rel=1e-12, nan_ok=True)
    net = df.iloc[-1]
    agg = analysis.aggregate(expected)
    assert net["n_edges"] == agg["n_edges"] == sum(_maskset().nnz_per_layer().values())
    assert net["mu0"] == pytest.approx(agg["mu0"], rel=1e-12)
    # one meaning per column: the layer flag, and the network's fraction in its own column
    assert df["is_ramanujan"].iloc[:-1].dropna().isin([True, False]).all()
    assert pd.isna(net["is_ramanujan"]) and df["ramanujan_fraction"].iloc[:-1].isna().all()
    assert net["ramanujan_fraction"] == pytest.approx(agg["ramanujan_fraction"])
    # shapes are integers: [out, in, *kernel]
    assert [json.loads(x) for x in df["shape"].iloc[:-1]] == [[8, 4, 3, 3], [10, 8], [1, 6]]
    # the layer rows alone sum to the network's counts
    assert df[df["level"] == "layer"]["n_edges"].sum() == net["n_edges"]


def test_analyze_json(capsys, saved):
    rc, out, err = _run(capsys, "analyze", saved, "--format", "json")
    assert rc == 0, err

    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    records = json.loads(out, parse_constant=no_constants)
    assert [r["layer"] for r in records] == [*LAYERS, "(network)"]
    tiny = records[2]
    assert tiny["mu_hat"] is None  # NaN -> null
    assert tiny["reason"]
    assert isinstance(records[0]["n_edges"], int)
    assert isinstance(records[0]["mu0"], float) and math.isfinite(records[0]["mu0"])
    assert records[0]["shape"] == [8, 4, 3, 3] and records[0]["layer_kind"] == "conv"
    assert records[-1]["level"] == "network" and records[-1]["shape"] is None
    assert records[-1]["is_ramanujan"] is None
    assert isinstance(records[-1]["ramanujan_fraction"], float)
    # the same shapes as info --json
    rc, out, err = _run(capsys, "info", "--json", saved)
    assert [x["shape"] for x in json.loads(out)[0]["layers"]] == [r["shape"] for r in records[:-1]]


def test_analyze_metrics_one_comma_separated_value_and_no_network(capsys, saved):
    # the option before the PATH: it takes one value, never the PATH after it
    rc, out, err = _run(capsys, "analyze", "--metrics", "mu0", "--metrics", "mu_hat,mu0",
                        "--format", "csv", "--no-network", saved)  # fmt: skip
    assert rc == 0, err
    df = pd.read_csv(io.StringIO(out))
    assert list(df.columns) == ["level", "layer", "layer_kind", "shape", "mu0", "mu_hat", "reason"]
    assert list(df["layer"]) == LAYERS and set(df["level"]) == {"layer"}
    # the old space-separated form: the second name is taken for a PATH (and names no file)
    rc, _, err = _run(capsys, "analyze", saved, "--metrics", "mu0", "mu_hat")
    assert rc == 2 and "mu_hat" in err


def test_analyze_no_weights(capsys, saved):
    rc, out, err = _run(capsys, "analyze", saved, "--format", "csv", "--no-weights")
    assert rc == 0, err
    df = pd.read_csv(io.StringIO(out))
    assert not [c for c in df.columns if c.startswith("weighted_")]
    assert "mu0" in df.columns


def test_analyze_rolled_differs(capsys, saved):
    outs = []
    for conv in ("unrolled", "rolled"):
        rc, out, err = _run(capsys, "analyze", saved, "--format", "csv", "--conv", conv)
        assert rc == 0, err
        outs.append(pd.read_csv(io.StringIO(out)).set_index("layer"))
    assert outs[0].loc["conv1.weight", "n_in"] == 4 * 3 * 3
    assert outs[1].loc["conv1.weight", "n_in"] == 4


def test_analyze_several_files(capsys, saved, saved2):
    rc, out, err = _run(capsys, "analyze", saved, saved2, "--format", "csv")
    assert rc == 0, err
    df = pd.read_csv(io.StringIO(out))
    assert df.columns[0] == "file"
    assert list(df["file"]) == [str(saved)] * 4 + [str(saved2)] * 4
    assert list(df["layer"]) == [*LAYERS, "(network)"] * 2
    a, b = df[df["file"] == str(saved)], df[df["file"] == str(saved2)]
    assert list(a["n_edges"]) != list(b["n_edges"])


def test_analyze_parquet(tmp_path, capsys, saved, saved2):
    out_file = tmp_path / "metrics.parquet"
    rc, out, err = _run(capsys, "analyze", saved, saved2, "--format", "parquet", "--out", out_file)
    assert rc == 0, err
    assert out == ""
    df = pd.read_parquet(out_file)
    assert len(df) == 8 and df.columns[0] == "file"
    net = df[df["level"] == "network"]
    assert list(net["layer"]) == ["(network)"] * 2
    # the network's fraction of Ramanujan layers has its own column; the flag stays boolean
    assert net["ramanujan_fraction"].between(0, 1).all() and net["is_ramanujan"].isna().all()
    assert df["is_ramanujan"].dtype == "boolean" and df["n_edges"].dtype == "Int64"
    assert df["ramanujan_fraction"].dtype == "float64"
    assert list(df["shape"].iloc[0]) == [8, 4, 3, 3]  # a list of ints
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["metrics.parquet", saved.name, saved2.name]
    )


def test_analyze_format_from_out_suffix(tmp_path, capsys, saved):
    for name in ("m.csv", "m.json", "m.parquet"):
        rc, out, err = _run(capsys, "analyze", saved, "--out", tmp_path / name)
        assert rc == 0, err
        assert out == ""
    assert len(pd.read_csv(tmp_path / "m.csv")) == 4
    assert len(json.loads((tmp_path / "m.json").read_text())) == 4
    assert len(pd.read_parquet(tmp_path / "m.parquet")) == 4
    assert not list(tmp_path.glob(".*.tmp"))


def test_analyze_replaces_existing_out(tmp_path, capsys, saved):
    out_file = tmp_path / "m.csv"
    out_file.write_text("old\n")
    rc, _, err = _run(capsys, "analyze", saved, "--out", out_file)
    assert rc == 0, err
    assert pd.read_csv(out_file)["layer"].iloc[0] == "conv1.weight"


def test_list_metrics(capsys):
    rc, out, _ = _run(capsys, "analyze", "--list-metrics")
    assert rc == 0
    names = [line.split()[0] for line in out.splitlines()[1:]]
    assert names == list(analysis.METRICS)


def test_progress_bar_when_asked(capsys, saved, saved2):
    rc, _, err = _run(capsys, "analyze", saved, saved2, "--format", "csv", "--progress")
    assert rc == 0
    assert "files" in err and "2/2" in err
    rc, _, err = _run(capsys, "analyze", saved, saved2, "--format", "csv")
    assert rc == 0 and err == ""  # stderr is not a terminal here


def test_empty_layers(tmp_path, capsys):
    path = tmp_path / "empty.safetensors"
    masktopo.save(path, _maskset(empty=True))
    out_file = tmp_path / "m.csv"
    rc, _, err = _run(capsys, "analyze", path, "--out", out_file)
    _assert_user_error(rc, err, contains=(str(path), "fc.weight", "--allow-empty-layers"))
    assert not out_file.exists()
    rc, _, err = _run(capsys, "analyze", path, "--out", out_file, "--allow-empty-layers")
    assert rc == 0, err
    df = pd.read_csv(out_file).set_index("layer")
    assert df.loc["fc.weight", "n_edges"] == 0
    assert math.isnan(df.loc["fc.weight", "mu0"])


def _write_run(root: Path, masksets: list[MaskSet]) -> Path:
    """A run directory in the documented format: run.json, events.jsonl, one file per event."""
    root.mkdir()
    layers = [
        {"name": x.name, "kind": x.kind, "shape": list(x.shape)} for x in masksets[0].layers()
    ]
    run = {"format": "masktopo.run", "format_version": 1, "config": {}, "layers": layers}
    (root / "run.json").write_text(json.dumps(run), encoding="utf-8")
    lines = []
    for i, ms in enumerate(masksets):
        masktopo.save(root / f"event-{i}.safetensors", ms)
        line = {
            "event": i,
            "step": i,
            "epoch": i,
            "kind": "prune",
            "file": f"event-{i}.safetensors",
        }
        line.update(has_weights=ms.has_weights, nnz=ms.nnz_per_layer(), density=ms.density())
        lines.append(json.dumps(line) + "\n")
    (root / "events.jsonl").write_text("".join(lines), encoding="utf-8")
    return root


def test_run_directory_events(tmp_path, capsys):
    masksets = [_maskset(seed=0), _maskset(seed=5)]
    run = _write_run(tmp_path / "run", masksets)
    rc, out, err = _run(capsys, "info", run)
    assert rc == 0, err
    assert "run events: 2 (describing event 1)" in out
    # the event's fields as key=value words, without its file and per-layer counts (the table)
    event = next(line for line in out.splitlines() if line.startswith("  event: "))
    assert "kind=prune" in event and "file=" not in out and "nnz=" not in out
    edges = {}
    for event in ("0", "-1", None):
        extra = [] if event is None else ["--event", event]
        rc, out, err = _run(capsys, "analyze", run, "--format", "csv", "--no-network", *extra)
        assert rc == 0, err
        df = pd.read_csv(io.StringIO(out))
        edges[event] = list(df["n_edges"])
        if event is not None:  # which event it was, as in the whole run's table
            want = {"0": 0, "-1": 1}[event]
            assert df[["event", "step", "epoch"]].eq(want).all().all()
            assert set(df["event_kind"]) == {"prune"}
    assert edges["0"] == list(masksets[0].nnz_per_layer().values())
    assert edges["-1"] == list(masksets[1].nnz_per_layer().values())
    assert edges["0"] != edges["-1"]
    # Without --event, every event (tests/cli/test_cli_runs.py covers run analysis in depth).
    assert edges[None] == edges["0"] + edges["-1"]
    rc, _, err = _run(capsys, "analyze", run, "--event", "5")
    _assert_user_error(rc, err, contains=(str(run), "out of range"))


def test_zeros_as_mask_for_plain_checkpoints(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(10, 8, generator=g) * (torch.rand(10, 8, generator=g) < 0.5)
    path = tmp_path / "plain.pt"
    torch.save({"state_dict": {"fc.weight": weight, "fc.bias": torch.zeros(10)}}, path)
    rc, _, err = _run(capsys, "analyze", path)
    _assert_user_error(rc, err, contains=(str(path), "--zeros-as-mask"))
    rc, out, err = _run(capsys, "analyze", path, "--zeros-as-mask", "--format", "json")
    assert rc == 0, err
    records = json.loads(out)
    assert [r["layer"] for r in records] == ["fc.weight", "(network)"]
    assert records[0]["n_edges"] == int((weight != 0).sum())
    assert records[0]["weighted_mu0"] is not None


# -- demo -----------------------------------------------------------------------------------------
def test_demo(tmp_path, capsys):
    out_dir = tmp_path / "demo"
    rc, out, err = _run(capsys, "demo", "--out", out_dir)
    assert rc == 0, err
    path = out_dir / "demo-resnet18-erk.safetensors"
    assert path.is_file()
    assert masktopo.load(path).equal(examples.demo_maskset())
    assert str(path) in out
    for name in examples.resnet18_cifar_shapes():
        assert name in out
    assert "network (aggregated over layers):" in out and "full_spectrum_norm" in out


# -- bad input ------------------------------------------------------------------------------------
@pytest.fixture
def corrupt(tmp_path) -> Path:
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(b"\x07garbage, not a safetensors header" * 3)
    return path


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "corrupt",
        "good_then_corrupt",
        "unknown_metric",
        "parquet_without_out",
        "cuda",
        "out_dir_missing",
        "weighted_metric_without_weights",
    ],
)
def test_bad_input_one_line_error(case, tmp_path, capsys, saved, corrupt):
    out_file = tmp_path / "metrics.csv"
    out_file_args = ["--out", out_file]
    contains: tuple[str, ...] = ()
    if case == "missing":
        missing = tmp_path / "nope.safetensors"
        argv, contains = [missing, *out_file_args], (str(missing),)
    elif case == "corrupt":
        argv, contains = [corrupt, *out_file_args], (str(corrupt),)
    elif case == "good_then_corrupt":
        argv, contains = [saved, corrupt, *out_file_args], (str(corrupt),)
    elif case == "unknown_metric":
        argv, contains = [saved, "--metrics", "mu0,bogus", *out_file_args], ("bogus", "mu_hat")
    elif case == "parquet_without_out":
        argv, contains = [saved, "--format", "parquet"], ("--out",)
    elif case == "cuda":
        if torch.cuda.is_available():
            pytest.skip("CUDA is available here")
        argv, contains = [saved, "--device", "cuda", *out_file_args], ("cuda",)
    elif case == "out_dir_missing":
        out_file = tmp_path / "no" / "such" / "dir.csv"
        argv, contains = [saved, "--out", out_file], ("does not exist",)
    else:
        argv = [saved, "--no-weights", "--metrics", "weighted_mu0", *out_file_args]
        contains = ("weighted_mu0",)
    rc, out, err = _run(capsys, "analyze", *argv)
    _assert_user_error(rc, err, contains=contains)
    assert out == ""
    assert not out_file.exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_failure_leaves_existing_out_untouched(tmp_path, capsys, saved, corrupt):
    out_file = tmp_path / "metrics.csv"
    out_file.write_text("previous results\n")
    rc, _, err = _run(capsys, "analyze", saved, corrupt, "--out", out_file)
    _assert_user_error(rc, err)
    assert out_file.read_text() == "previous results\n"


def test_info_bad_input(tmp_path, capsys, corrupt):
    for path in (tmp_path / "missing.npz", corrupt):
        rc, _, err = _run(capsys, "info", path)
        _assert_user_error(rc, err, contains=(str(path),))


def test_usage_errors_exit_2(capsys, saved):
    for argv in (["analyze"], ["analyze", saved, "--format", "xml"], ["frobnicate"]):
        rc, _, err = _run(capsys, *argv)
        assert rc == 2
        assert "usage:" in err and "Traceback" not in err


def test_demo_into_a_file_says_so(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    rc, _, err = _run(capsys, "demo", "--out", blocker)
    assert (
        rc == 2
        and err
        == f"masktopo: error: {blocker}: cannot write the demo there: it is a file, not a folder\n"
    )


def test_os_error_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    rc, _, err = _run(capsys, "demo", "--out", blocker / "sub")
    _assert_user_error(rc, err, contains=(str(blocker),))


def test_keyboard_interrupt_exits_130_with_one_line(capsys, saved, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_analyze, "analyze_paths", interrupted)
    rc, out, err = _run(capsys, "analyze", saved)
    assert rc == 130
    assert out == "" and err == "masktopo: interrupted\n"


def test_an_interrupt_inside_numba_is_an_interrupt(capsys, saved, monkeypatch):
    """numba turns a Ctrl-C that arrives while it loads a compiled function into a SystemError
    whose context is the KeyboardInterrupt (seen on `analyze` and `pags`): exit 130, one line,
    no traceback. A SystemError without one is not hidden."""

    def numba_like(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            # implicit context, as numba's (B904 asks for "from", which would set __cause__)
            raise SystemError("<function _numba_unpickle> returned a result with an exception set")  # noqa: B904

    monkeypatch.setattr(cli_analyze, "analyze_paths", numba_like)
    rc, _, err = _run(capsys, "analyze", saved)
    assert rc == 130 and err == "masktopo: interrupted\n"

    def broken(*args, **kwargs):
        raise SystemError("a bug")

    monkeypatch.setattr(cli_analyze, "analyze_paths", broken)
    with pytest.raises(SystemError, match="a bug"):
        main(["analyze", str(saved)])


def test_sigterm_unwinds_like_ctrl_c(tmp_path, capsys, saved, monkeypatch):
    """SIGTERM during a write: the temporary file is removed, the destination not created, exit
    143 with one line; the previous SIGTERM handler is back afterwards."""
    import signal

    from masktopo.files import atomic_write

    dest = tmp_path / "out.bin"

    def killed_while_writing(*args, **kwargs):
        def write(f):
            f.write(b"partial")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends

        atomic_write(dest, write)

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(cli_analyze, "analyze_paths", killed_while_writing)
    t0 = time.perf_counter()
    rc, _, err = _run(capsys, "analyze", saved)
    assert rc == 143 and err == "masktopo: terminated\n"
    assert time.perf_counter() - t0 < 4
    assert not dest.exists() and not list(tmp_path.glob(".*.tmp"))
    assert signal.getsignal(signal.SIGTERM) is before


def test_an_interrupted_run_command_says_how_to_resume(capsys, monkeypatch, tmp_path):
    from masktopo.cli import train as cli_train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_train, "run", interrupted)
    rc, _, err = _run(capsys, "train", "--model", "lenet300", "--dataset", "fashion-mnist",
                      "--out", tmp_path / "r")  # fmt: skip
    assert rc == 130
    assert err == (
        "masktopo: interrupted; a run it left is continued with --resume (masktopo train --help)\n"
    )


@pytest.mark.parametrize("case", ["missing", "corrupt", "unknown_metric"])
def test_subprocess_errors_have_no_traceback(case, tmp_path, saved, corrupt):
    out_file = tmp_path / "m.csv"
    argv = {
        "missing": [tmp_path / "nope.safetensors"],
        "corrupt": [corrupt],
        "unknown_metric": [saved, "--metrics", "bogus"],
    }[case]
    proc = run_masktopo("analyze", *argv, "--out", out_file, cwd=tmp_path)
    _assert_user_error(proc.returncode, proc.stderr)
    assert proc.stdout == ""
    assert not out_file.exists()


def test_subprocess_info_and_analyze(tmp_path, saved):
    proc = run_masktopo("info", saved, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert all(name in proc.stdout for name in LAYERS)
    proc = run_masktopo("analyze", saved, "--format", "csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    df = pd.read_csv(io.StringIO(proc.stdout))
    assert list(df["layer"]) == [*LAYERS, "(network)"]


# -- output helpers -------------------------------------------------------------------------------
def test_render_rows_aligns_numbers_right_and_text_left():
    text = render_rows(("name", "value"), [("a", 1.5), ("longer", float("nan")), ("b", None)])
    lines = text.splitlines()
    assert lines[0] == "name    value"
    assert lines[1] == "a         1.5"
    assert lines[2] == "longer    nan"
    assert lines[3] == "b         nan"
    text = render_rows(("name", "shape"), [("a", "4x4"), ("(network)", None)])
    assert text.splitlines()[2] == "(network)"


def test_narc_convention_flag(tmp_path, capsys):
    from masktopo.cli.main import main

    gen = torch.Generator().manual_seed(1)
    ms = masktopo.MaskSet({"fc.weight": torch.rand(40, 60, generator=gen) < 0.3})
    path = masktopo.save(tmp_path / "m.safetensors", ms)
    values = {}
    for conv in ("directed", "undirected"):
        rc = main(["analyze", str(path), "--format", "json", "--no-network", "--narc", conv,
                   "--metrics", "narc"])  # fmt: skip
        assert rc == 0
        values[conv] = json.loads(capsys.readouterr().out)[0]["narc"]
    expected = masktopo.analysis.layer_metrics(ms["fc.weight"], narc="undirected")["narc"]
    assert values["undirected"] == pytest.approx(expected, rel=1e-12)
    assert values["directed"] != pytest.approx(values["undirected"])


# -- the text table fits the terminal; --columns; --format markdown ------------------------------
def test_table_fits_the_terminal_width_and_says_how_to_get_every_column(capsys, saved, monkeypatch):
    rc, wide, err = _run(capsys, "analyze", saved)  # no $COLUMNS, not a terminal: no limit
    assert rc == 0 and err == "", err
    full = wide.splitlines()[0].split()
    monkeypatch.setenv("COLUMNS", "60")
    rc, out, err = _run(capsys, "analyze", saved)
    assert rc == 0, err
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 60
    header = lines[0].split()
    assert header[0] == "layer" and len(header) < len(full)
    assert [line.split()[0] for line in lines[1:]] == [*LAYERS, "(network)"]
    hidden = [c for c in full if c not in header]
    notes = err.strip().splitlines()
    assert len(notes) == 1 and notes[0].startswith("masktopo: note: ")
    assert "60 terminal columns" in notes[0] and "--columns all" in notes[0]
    assert all(c in notes[0] for c in hidden)
    # --columns all: every column of the table, not fitted, no note
    rc, out, err = _run(capsys, "analyze", saved, "--columns", "all")
    assert rc == 0 and err == ""
    header = out.splitlines()[0].split()
    assert header[:4] == ["level", "layer", "layer_kind", "shape"] and "n_layers" in header
    assert "ramanujan_fraction" in header and len(out.splitlines()[0]) > 60
    # --columns NAMES: those, in that order, in every format
    rc, out, err = _run(capsys, "analyze", saved, "--columns", "layer,n_edges", "--columns", "mu0")
    assert rc == 0 and err == "" and out.splitlines()[0].split() == ["layer", "n_edges", "mu0"]
    rc, out, _ = _run(capsys, "analyze", saved, "--columns", "layer,mu0", "--format", "csv")
    assert out.splitlines()[0] == "layer,mu0"


def test_reason_column_is_clipped_to_the_room_left(capsys, saved, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    rc, out, _ = _run(capsys, "analyze", saved, "--metrics", "mu_hat")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split()[-1] == "reason" and max(map(len, lines)) <= 100
    tiny = next(line for line in lines if line.startswith("tiny.weight"))
    assert tiny.endswith("…")  # its long reason, clipped


def test_unknown_column_is_a_one_line_error(tmp_path, capsys, saved):
    out_file = tmp_path / "m.csv"
    rc, out, err = _run(capsys, "analyze", saved, "--columns", "layer,bogus", "--out", out_file)
    _assert_user_error(rc, err, contains=("unknown column 'bogus'", "mu0", "all"))
    assert out == "" and not out_file.exists()


def test_markdown_format(tmp_path, capsys, saved):
    rc, out, err = _run(capsys, "analyze", saved, "--format", "markdown", "--metrics", "mu0")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == "| layer | shape | mu0 | reason |"
    assert lines[1] == "|---|---|---:|---|"
    assert lines[2].startswith("| conv1.weight | 8x4x3x3 | ")
    assert lines[-1].startswith("| (network) |  | ")
    rc, _, err = _run(capsys, "analyze", saved, "--out", tmp_path / "m.md", "--metrics", "mu0")
    assert rc == 0 and (tmp_path / "m.md").read_text(encoding="utf-8") == out


# -- the notice while numba compiles the kernels --------------------------------------------------
def test_compile_notice_once_when_the_cache_is_cold(capsys, saved, monkeypatch):
    from masktopo.cli import _output

    monkeypatch.setattr(analysis, "kernel_cache_is_cold", lambda: True)
    monkeypatch.setattr(_output, "_COMPILE_NOTED", False)
    analysis.analyze(masktopo.load(saved))  # a library call: silent
    assert capsys.readouterr().err == ""
    rc, _, err = _run(capsys, "analyze", saved, "--format", "csv")  # stderr is no terminal
    assert rc == 0 and err == ""
    rc, _, err = _run(capsys, "analyze", saved, "--format", "csv", "--progress")
    assert rc == 0
    assert err.count(f"masktopo: note: {_output.COMPILE_NOTE}") == 1
    rc, _, err = _run(capsys, "analyze", saved, "--format", "csv", "--progress")
    assert _output.COMPILE_NOTE not in err  # once per process
    monkeypatch.setattr(_output, "_COMPILE_NOTED", False)
    monkeypatch.setattr(analysis, "kernel_cache_is_cold", lambda: False)
    rc, _, err = _run(capsys, "analyze", saved, "--format", "csv", "--progress")
    assert _output.COMPILE_NOTE not in err  # a warm cache: nothing to say


def test_cache_is_cold_reads_numba_s_index():
    from masktopo.analysis import kernel_cache_is_cold, layer_metrics

    layer_metrics(torch.ones(3, 4, dtype=torch.bool))  # compiled or loaded by now
    assert kernel_cache_is_cold() is False


# -- train: plain text, every default -------------------------------------------------------------
def test_train_list_methods_plain_text_with_every_default(capsys):
    from masktopo.cli.train import describe_method, list_methods

    rc, out, _ = _run(capsys, "train", "--list-methods")
    assert rc == 0
    assert "``" not in out and ":func:" not in out
    assert "update_interval=1500" in out and "update_interval=100," in out  # itop, rigl
    assert "init_method=erk" in out and "gap_mode=cyclic" in out and "update_end=none" in out
    assert all(len(line) <= 100 for line in list_methods(width=100).splitlines())

    class Doc:
        """Drop by :func:`~masktopo.trainer.core.magnitude`, grow ``random`` (see [N23]_).

        Second paragraph, not shown."""

        summary = ""

    assert describe_method(Doc) == "Drop by magnitude, grow random (see)."


def test_train_help_shows_every_default(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    rc, out, _ = _run(capsys, "train", "--help")
    assert rc == 0
    assert "--optimizer {sgd,adamw}" in out and "--device {auto,cpu,cuda}" in out
    assert "options without a flag (--set NAME=VALUE" in out
    for name, default in (("momentum", "0.9"), ("lr_schedule", '"step"'), ("nesterov", "true")):
        line = next(x for x in out.splitlines() if x.strip().startswith(name + " "))
        assert f"(default: {default})" in line
    assert "--list-methods" in out


def test_plain_text_from_rest():
    from masktopo.cli._output import plain_text

    assert plain_text("``a``  *b* **c** :class:`x.Y` :func:`~p.q.r` `link <http://x>`_") == (
        "a b c x.Y r link"
    )


def test_compile_notice_before_plot_report_pags(tmp_path, capsys, monkeypatch):
    from masktopo.cli import _output

    monkeypatch.setattr(analysis, "kernel_cache_is_cold", lambda: True)
    monkeypatch.setattr(_output, "_COMPILE_NOTED", False)
    rc, _, err = _run(capsys, "pags", "--list-methods", "--progress")  # lists: no analysis
    assert rc == 0 and _output.COMPILE_NOTE not in err
    rc, _, err = _run(capsys, "plot", tmp_path / "nowhere", "--out", tmp_path / "f", "--progress")
    assert rc == 2
    assert err.splitlines()[0] == f"masktopo: note: {_output.COMPILE_NOTE}"


def test_a_usage_error_shows_a_short_usage_and_the_error(capsys):
    """train's full usage runs to ~20 lines; an error shows its positionals and [options]."""
    rc, _, err = _run(capsys, "train", "--epochs", "x")
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 2
    assert lines[0] == "usage: masktopo train [options]  ('masktopo train --help' lists them)"
    assert lines[1].startswith("masktopo train: error: argument --epochs:")
    rc, _, err = _run(capsys, "prune")
    assert err.splitlines()[0].startswith("usage: masktopo prune [INPUT] [options]")
    rc, _, err = _run(capsys, "info")  # a short usage stays whole
    assert rc == 2 and "[--zeros-as-mask]" in err
    rc, out, _ = _run(capsys, "train", "--help")  # --help still lists everything
    assert "--max-steps N" in out and "--epochs N" in out


def test_a_misspelled_flag_gets_the_closest_one(capsys):
    rc, _, err = _run(capsys, "train", "--densty", "0.1")
    assert rc == 2 and "masktopo train: error: unrecognized arguments: --densty 0.1" in err
    assert "(--densty: did you mean --density?)" in err
    rc, _, err = _run(capsys, "info", "x.pt", "--zeros-as-mak", "--zzz=1")
    assert "masktopo info: error: unrecognized arguments: --zeros-as-mak --zzz=1" in err
    assert "did you mean --zeros-as-mask?" in err and "--zzz: did you mean" not in err
