"""``masktopo plot`` and ``masktopo report`` on a real (tiny) training run.

One run is trained per module (RigL on the synthetic cubist spiral, a few seconds); the other runs
are copies of it: one cut short (its first events, no summary.json: a run still training) and one
with a corrupt event file.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from masktopo.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["first_layer.weight", "second_layer.weight", "third_layer.weight", "clf.weight"]
CORRUPT_EVENT = 2


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``full``: a finished run; ``partial``: its first 3 events, no summary.json; ``corrupt``:
    the full run with event 2's mask file overwritten."""
    from masktopo.trainer import TrainConfig, train

    base = tmp_path_factory.mktemp("runs")
    full = base / "full"
    cfg = TrainConfig(method="rigl", model="spiral-mlp", dataset="cubist-spiral", density=0.3,
                      epochs=2, batch_size=1000, update_interval=15, optimizer="adamw",
                      weight_decay=0.0)  # fmt: skip
    result = train(cfg, full)
    assert result.n_events >= 5
    partial = base / "partial"
    shutil.copytree(full, partial)
    (partial / "summary.json").unlink()
    lines = (partial / "events.jsonl").read_text().splitlines(keepends=True)
    (partial / "events.jsonl").write_text("".join(lines[:3]))
    corrupt = base / "corrupt"
    shutil.copytree(full, corrupt)
    (corrupt / "masks" / f"event-{CORRUPT_EVENT:06d}.safetensors").write_bytes(b"not a mask file")
    return {"full": full, "partial": partial, "corrupt": corrupt, "n_events": result.n_events}


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _assert_user_error(rc, err, *contains):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("masktopo: error: ") and "Traceback" not in err
    for text in contains:
        assert text in lines[0], lines[0]


def _no_staging_left(folder: Path) -> None:
    assert not [p for p in folder.rglob(".masktopo-*")], list(folder.rglob("*"))


def assert_png(path: Path) -> None:
    """A non-empty PNG that shows something: many distinct colours, not one flat fill."""
    assert path.is_file() and path.stat().st_size > 0, path
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    rgb = (img[..., :3].reshape(-1, 3) * 255).round().astype(np.uint32)
    assert np.ptp(rgb, axis=0).max() > 128, f"{path}: (nearly) uniform pixels"
    colours = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    assert np.unique(colours).size >= 5, f"{path}: fewer than 5 colours"
    assert (rgb < 230).any(axis=1).mean() > 0.01, f"{path}: almost nothing drawn"


def assert_svg(data: bytes | Path) -> None:
    if isinstance(data, Path):
        data = data.read_bytes()
    assert data, "empty SVG"
    root = ET.fromstring(data)
    assert root.tag.endswith("svg")
    assert sum(1 for el in root.iter() if el.tag.endswith("path")) > 10


# ------------------------------------------------------------------------------------------------
# plot
# ------------------------------------------------------------------------------------------------
def test_plot_one_run_writes_the_standard_figures(runs, tmp_path, capsys):
    out = tmp_path / "figs" / "one"  # two folders created
    rc, stdout, err = _run(capsys, "plot", runs["full"], "--out", out, "--format", "png,svg")
    assert rc == 0, err
    written = [Path(line) for line in stdout.split()]
    assert sorted(written) == sorted(out.iterdir())
    stems = {p.stem for p in written}
    # the run has weights at its first and last event, R_s and accuracies: every standard figure
    for stem in ("ramanujan_gap", "weighted_spectral_gap", "imdb_ramanujan_gap",
                 "full_spectrum_norm", "density", "R_s", "accuracy", "spectrum-plane"):  # fmt: skip
        assert stem in stems
    for p in written:
        assert_png(p) if p.suffix == ".png" else assert_svg(p)
    assert {p.suffix for p in written} == {".png", ".svg"}
    _no_staging_left(tmp_path)


@pytest.mark.parametrize(
    "title, expect",
    [(None, "density per layer"), ("", None), ("{} (RigL, 30%)", "density per layer (RigL, 30%)")],
)
def test_plot_vector_formats_and_titles(title, expect, runs, tmp_path, capsys):
    out = tmp_path / "vec"
    extra = [] if title is None else ["--title", title]
    rc, _, err = _run(capsys, "plot", runs["full"], "--out", out, "--metric", "density",
                      "--format", "svg,pdf", *extra)  # fmt: skip
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "density.pdf", "density.svg", "spectrum-plane.pdf", "spectrum-plane.svg"
    ]  # fmt: skip
    pdf = (out / "density.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and b"/Type3" not in pdf  # TrueType text, no bitmap glyphs
    svg = (out / "density.svg").read_text()
    assert_svg(out / "density.svg")
    texts = re.findall(r"<!-- (.*?) -->", svg)  # matplotlib names each text in a comment
    assert "training step (optimizer steps)" in texts and "network" in texts
    titles = [t for t in texts if t.startswith("density per layer")]
    assert titles == ([expect] if expect else [])
    assert not [t for t in texts if "full" in t.split()]  # the run folder is not in the figure


def test_plot_compares_runs(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    rc, _, err = _run(capsys, "plot", runs["full"], runs["partial"], "--out", out,
                      "--metric", "full_spectrum_norm,density", "--metric", "R_s",
                      "--labels", "finished", "--labels", "still training")  # fmt: skip
    assert rc == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["compare-R_s.png", "compare-density.png", "compare-full_spectrum_norm.png",
                     "spectrum-plane.png"]  # fmt: skip
    for name in names:
        assert_png(out / name)


def test_plot_every_and_x_axis(runs, tmp_path, capsys):
    out = tmp_path / "every"
    rc, _, err = _run(capsys, "plot", runs["full"], "--out", out, "--every", "2",
                      "--x", "epoch", "--metric", "ramanujan_gap")  # fmt: skip
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["ramanujan_gap.png", "spectrum-plane.png"]
    assert_png(out / "ramanujan_gap.png")


def test_plot_layer_figures_of_a_mask_file(runs, tmp_path, capsys):
    mask_file = runs["full"] / "masks" / f"event-{runs['n_events'] - 1:06d}.safetensors"
    out = tmp_path / "layer"
    rc, _, err = _run(capsys, "plot", mask_file, "--layer", "second_layer.weight",
                      "--out", out)  # fmt: skip
    assert rc == 0, err
    names = sorted(p.name for p in out.iterdir())
    # the last event dumps weights, so the weighted spectrum is drawn too
    assert names == sorted(f"second_layer-{k}.png" for k in
                           ("degrees", "spectrum", "weighted-spectrum", "bipartite"))  # fmt: skip
    for name in names:
        assert_png(out / name)

    # a run directory with --layer: one event's layers (default all), here event 0
    out2 = tmp_path / "layer-run"
    rc, _, err = _run(capsys, "plot", runs["full"], "--layer", "clf.weight,first_layer.weight",
                      "--event", "0", "--out", out2)  # fmt: skip
    assert rc == 0, err
    assert {p.name.split("-")[0] for p in out2.iterdir()} == {"clf", "first_layer"}


def test_plot_skips_corrupt_events_with_a_warning(runs, tmp_path, capsys):
    out = tmp_path / "c"
    rc, _, err = _run(capsys, "plot", runs["corrupt"], "--out", out, "--metric", "density",
                      "--no-cache")  # fmt: skip
    assert rc == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("masktopo: warning: ")
    assert f"event-{CORRUPT_EVENT:06d}.safetensors" in lines[0]
    assert_png(out / "density.png")


@pytest.mark.parametrize(
    "case",
    ["not-a-run", "unknown-metric", "out-is-a-file", "out-under-a-file", "unknown-layer",
     "labels-count", "missing-path"],
)  # fmt: skip
def test_plot_bad_input_is_one_line_and_writes_nothing(case, runs, tmp_path, capsys):
    out = tmp_path / "figs"
    run = runs["full"]
    afile = tmp_path / "a-file"
    afile.write_text("x")
    plain = tmp_path / "plain"
    plain.mkdir()
    argv, expect = {
        "not-a-run": ([plain, "--out", out], ("not a run directory",)),
        "unknown-metric": ([run, "--out", out, "--metric", "density,nosuch"],
                           ("unknown metric 'nosuch'", "ramanujan_gap", "full_spectrum_norm")),
        "out-is-a-file": ([run, "--out", afile], ("a-file", "not a folder")),
        "out-under-a-file": ([run, "--out", afile / "figs"], ("a-file",)),
        "unknown-layer": ([run, "--layer", "nosuch", "--out", out],
                          ("unknown layer 'nosuch'", "clf.weight")),
        "labels-count": ([run, runs["partial"], "--labels", "one", "--out", out],
                         ("1 label(s) for 2 run(s)",)),
        "missing-path": ([tmp_path / "nowhere", "--out", out], ("nowhere",)),
    }[case]  # fmt: skip
    rc, stdout, err = _run(capsys, "plot", *argv)
    _assert_user_error(rc, err, *expect)
    assert stdout == ""
    assert not out.exists()
    assert afile.read_text() == "x"
    _no_staging_left(tmp_path)


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}  # fmt: skip


class PageChecker(HTMLParser):
    """Collects the title, every src/href and the text; checks that elements nest properly."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.refs: list[tuple[str, str, str]] = []
        self.tags: list[str] = []
        self.title = ""
        self.text: list[str] = []
        self.doctype = None

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for key, value in attrs:
            if key in ("src", "href", "srcset", "data", "action", "poster"):
                self.refs.append((tag, key, value or ""))
            if key == "style" and value and "url(" in value:
                self.errors.append(f"<{tag} style> uses url(): {value[:80]}")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        if self.stack and self.stack[-1] == "title":
            self.title += data
        if self.stack and self.stack[-1] == "style" and ("url(" in data or "@import" in data):
            self.errors.append("the style sheet loads something")
        self.text.append(data)


def check_page(path: Path) -> PageChecker:
    """Parse the report: valid nesting, a title, and nothing referenced outside the page."""
    page = path.read_text(encoding="utf-8")
    p = PageChecker()
    p.feed(page)
    p.close()
    assert p.doctype is not None and p.doctype.lower() == "doctype html"
    assert not p.errors, p.errors[:5]
    assert p.stack == [], f"unclosed elements: {p.stack}"
    for tag in ("html", "head", "title", "body", "main", "table"):
        assert tag in p.tags, f"no <{tag}>"
    assert p.title.strip()
    for tag in ("script", "link", "iframe", "object"):
        assert tag not in p.tags, f"<{tag}> in a self-contained page"
    for tag, key, value in p.refs:
        assert value.startswith(("data:", "#")), f"<{tag} {key}={value[:60]!r}> is external"
    return p


def _images(p: PageChecker) -> list[bytes]:
    out = []
    for tag, _key, value in p.refs:
        if tag == "img":
            head, b64 = value.split(",", 1)
            assert head in ("data:image/svg+xml;base64", "data:image/png;base64")
            out.append(base64.b64decode(b64))
    return out


def test_report_one_run_is_a_self_contained_page(runs, tmp_path, capsys):
    out = tmp_path / "report.html"
    rc, stdout, err = _run(capsys, "report", runs["full"], "--out", out)
    assert rc == 0, err
    assert stdout.strip() == str(out)
    p = check_page(out)
    assert "full" in p.title
    text = " ".join(p.text)
    images = _images(p)
    assert len(images) >= 8  # the standard figures and the Δr–λ plane
    for data in images:
        assert_svg(data)
    # the resolved config, every key and value
    cfg = json.loads((runs["full"] / "run.json").read_text())["config"]
    for key in ("method", "update_interval", "growth", "drop", "optimizer", "lr_milestones"):
        assert key in text
    assert "rigl" in text and "gradient" in text and "[0.5, 0.75]" in text
    # summary.json's final metrics, with their values
    final = json.loads((runs["full"] / "summary.json").read_text())["final"]
    assert f"{final['val_acc']:.6g}" in text and f"{final['R_s']:.6g}" in text
    # per-layer table of the last event, network table, path analysis
    for name in LAYERS:
        assert name in text
    assert f"last analyzed event ({runs['n_events'] - 1}" in text
    assert "effective density" in text and "hidden units" in text
    assert cfg["method"] == "rigl"


def test_report_png_figures(runs, tmp_path, capsys):
    out = tmp_path / "png.html"
    rc, _, err = _run(capsys, "report", runs["partial"], "--out", out, "--figures", "png")
    assert rc == 0, err
    p = check_page(out)
    images = _images(p)
    assert images
    for i, data in enumerate(images):
        f = tmp_path / f"fig-{i}.png"
        f.write_bytes(data)
        assert_png(f)
    assert "no summary.json" in " ".join(p.text)


def test_report_several_runs_names_corrupt_events_and_escapes_text(runs, tmp_path, capsys):
    out = tmp_path / "cmp.html"
    labels = ["<b>full</b>", "partial & co", 'corrupt "one"']
    rc, _, err = _run(capsys, "report", runs["full"], runs["partial"], runs["corrupt"],
                      "--out", out, *(x for label in labels for x in ("--labels", label)),
                      "--no-cache")  # fmt: skip
    assert rc == 0, err
    bad_file = f"event-{CORRUPT_EVENT:06d}.safetensors"
    assert "masktopo: warning:" in err and bad_file in err
    p = check_page(out)
    raw = out.read_text(encoding="utf-8")
    assert "<b>full</b>" not in raw and "&lt;b&gt;full&lt;/b&gt;" in raw
    assert "corrupt &quot;one&quot;" in raw and "partial &amp; co" in raw
    text = " ".join(p.text)
    assert "Comparison" in text and "Problems" in text
    assert f"event {CORRUPT_EVENT} left out" in text and bad_file in text
    # the intact events of the corrupt run are analyzed: its network table has n - 1 rows
    assert f"{runs['n_events'] - 1} analyzed event(s)" in text
    assert f"{runs['n_events']} analyzed event(s)" in text and "3 analyzed event(s)" in text
    assert any("#run-2" == v for _, k, v in p.refs if k == "href")


@pytest.mark.parametrize(
    "case", ["not-a-run", "no-folder", "out-is-a-folder", "out-is-run-json", "out-is-an-input"]
)
def test_report_bad_input_is_one_line_and_writes_nothing(case, runs, tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    out = tmp_path / "r.html"
    run = runs["full"]
    if case in ("out-is-run-json", "out-is-an-input"):  # a copy: the run itself must survive
        run = tmp_path / "copy"
        shutil.copytree(runs["partial"], run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    argv, expect = {
        "not-a-run": ([run, plain, "--out", out], ("plain", "not a run directory")),
        "no-folder": ([run, "--out", tmp_path / "missing" / "r.html"], ("does not exist",)),
        "out-is-a-folder": ([run, "--out", plain], ("is a folder",)),
        "out-is-run-json": ([run, "--out", run / "run.json"], ("part of the run directory",)),
        "out-is-an-input": ([run, "--out", run], ("is a folder",)),
    }[case]
    rc, stdout, err = _run(capsys, "report", *argv)
    _assert_user_error(rc, err, *expect)
    assert stdout == ""
    assert not out.exists() and list(plain.iterdir()) == []
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".r.html")]
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("command", ["report", "plot"])
def test_a_corrupt_line_of_events_jsonl_is_skipped_with_a_warning(command, runs, tmp_path, capsys):
    """A run killed mid-write or a disk error leaves a bad line: the other events are used."""
    run = tmp_path / "badrun"
    shutil.copytree(runs["partial"], run)
    lines = (run / "events.jsonl").read_text().splitlines(keepends=True)
    lines[1] = "{not json\n"  # a corrupt middle line
    (run / "events.jsonl").write_text("".join(lines))
    out = tmp_path / ("r.html" if command == "report" else "figs")
    rc, _, err = _run(capsys, command, run, "--out", out, "--no-cache")
    assert rc == 0, err
    warnings = [ln for ln in err.splitlines() if ln.startswith("masktopo: warning:")]
    assert len(warnings) == 1 and "events.jsonl: skipping line 2: not valid JSON" in warnings[0]
    assert out.exists()
    if command == "report":
        assert "line 2 of the event log skipped" in out.read_text()


@pytest.mark.parametrize(
    "edit, warning",
    [
        (lambda s: s["final"].update(test_acc="high"), "final 'test_acc' is not a number (string)"),
        (lambda s: s.update(final=[1, 2]), "'final' is not an object (array)"),
        (lambda s: s["history"][0].update(train_acc="x"),
         "history 'train_acc' is not a number in 1 of the 2 entries (string)"),
        (lambda s: s.update(history=[1, "a"]), "2 of the 2 history entries are not objects"),
        (lambda s: s.update(steps="many"), "'steps' is not an integer (string)"),
    ],
)  # fmt: skip
def test_wrongly_typed_summary_values_are_left_out_with_a_warning(edit, warning, runs, tmp_path,
                                                                  capsys):  # fmt: skip
    run = tmp_path / "run"
    shutil.copytree(runs["full"], run)
    summary = json.loads((run / "summary.json").read_text())
    edit(summary)
    (run / "summary.json").write_text(json.dumps(summary))
    page = tmp_path / "r.html"
    for argv in (["report", run, "--out", page], ["plot", run, "--out", tmp_path / "figs"]):
        rc, _, err = _run(capsys, *argv)
        assert rc == 0, err
        warnings = [ln for ln in err.splitlines() if ln.startswith("masktopo: warning:")]
        if argv[0] == "report":
            assert warnings == [f"masktopo: warning: {run / 'summary.json'}: {warning}: left out"]
        assert "Traceback" not in err
    text = page.read_text()
    assert ">high<" not in text and "many" not in text
    assert "Final metrics (summary.json)" in text


# ------------------------------------------------------------------------------------------------
# help stays light
# ------------------------------------------------------------------------------------------------
_PROBE = """
import contextlib, io, json, sys
from masktopo.cli.main import main
with contextlib.redirect_stdout(io.StringIO()) as buf:
    rc = main(sys.argv[1:])
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "matplotlib", "pandas", "numpy"})
print(json.dumps({"rc": rc, "heavy": heavy, "out": buf.getvalue()}))
"""


@pytest.mark.parametrize("command", ["plot", "report"])
def test_help_does_not_import_torch_or_matplotlib(command, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", _PROBE, command, "--help"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    probe = json.loads(proc.stdout.strip().splitlines()[-1])
    assert probe["rc"] == 0 and probe["heavy"] == []
    assert f"masktopo {command}" in probe["out"] and "--out" in probe["out"]


def test_plot_layer_figures_show_progress(runs, tmp_path, capsys):
    mask_file = runs["full"] / "masks" / f"event-{runs['n_events'] - 1:06d}.safetensors"
    rc, _, err = _run(capsys, "plot", mask_file, "--layer", "clf.weight,first_layer.weight",
                      "--progress", "--out", tmp_path / "p")  # fmt: skip
    assert rc == 0, err
    assert "layer figures" in err  # the slow part (one layer's four figures) says where it is
