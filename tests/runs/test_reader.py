"""Reading run directories: run.json, events.jsonl (bad lines skipped or strict), event files."""

from __future__ import annotations

import json
import warnings

import pytest
from _files import make_maskset, write_run

import masktopo
from masktopo import runs, store
from masktopo.errors import MaskFileError


@pytest.fixture
def run_dir(tmp_path):
    masksets = [make_maskset(seed=s, weights=s != 1, meta={"seed": s}) for s in range(3)]
    return write_run(tmp_path / "run", masksets), masksets


def test_run_directory(run_dir):
    path, masksets = run_dir
    assert masktopo.load(path) == masksets[-1]
    for k in range(3):
        assert masktopo.load(path, event=k) == masksets[k]
        assert masktopo.load(path, event=k - 3) == masksets[k]
    assert not masktopo.load(path, event=2, weights=False).has_weights
    last = masktopo.load(path)
    assert last.meta["seed"] == 2 and last.meta["event"]["event"] == 2
    assert last.meta["event"]["train_loss"] == pytest.approx(1 / 3)  # extra keys are kept
    run = runs.read_run(path)
    assert run.path == path and run.n_events == 3
    assert run.config["config"] == {"method": "test", "density": 0.4}
    assert [e["event"] for e in run.events] == [0, 1, 2]
    assert run.layers == masksets[0].layers()
    assert run.event_path(-1) == path / "masks" / "event-000002.safetensors"
    assert run.load(1) == masksets[1]


def test_run_event_out_of_range(run_dir):
    path, _ = run_dir
    for bad in (3, -4, 100):
        with pytest.raises(
            MaskFileError,
            match=r"event .* out of range.*3 event\(s\), valid are 0\.\.2 \(or -3\.\.-1",
        ):
            masktopo.load(path, event=bad)


def test_run_info(run_dir):
    path, masksets = run_dir
    d = masktopo.info(path)
    assert d["format"] == "run" and d["n_events"] == 3 and d["event"] == 2
    assert d["nnz"] == masksets[2].nnz() and d["has_weights"] is True
    assert [x["nnz"] for x in d["layers"]] == list(masksets[2].nnz_per_layer().values())


def test_run_with_cut_off_last_line(run_dir):
    path, masksets = run_dir
    events = path / "events.jsonl"
    line = json.dumps({"event": 3, "step": 300, "epoch": 3, "kind": "prune", "file": "masks/x"})
    with open(events, "a", encoding="utf-8") as f:
        f.write(line[: len(line) // 2])  # the run was killed during this write
    with pytest.warns(UserWarning, match=r"events\.jsonl: ignoring line 4, a write cut off"):
        ms = masktopo.load(path)
    assert ms == masksets[2]
    with pytest.warns(UserWarning):
        assert runs.read_run(path).n_events == 3


def test_run_last_line_without_newline_but_complete_is_kept(run_dir):
    path, masksets = run_dir
    events = path / "events.jsonl"
    events.write_bytes(events.read_bytes().rstrip(b"\n"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert masktopo.load(path) == masksets[2]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ("", "empty line"),
        ("[1, 2]", "not a JSON object"),
        ('{"event": 1}', "missing key 'step'"),
    ],
)
def test_run_with_corrupt_middle_line(run_dir, line, message):
    path, masksets = run_dir
    events = path / "events.jsonl"
    lines = events.read_text(encoding="utf-8").splitlines()
    lines[1] = line
    events.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # strict (what a resumed run checks its log with): an error naming the line
    with pytest.raises(MaskFileError, match=rf"events\.jsonl line 2: {message}") as err:
        runs.read_run(path, strict=True)
    assert str(err.value).startswith(str(path))
    # by default: the line is skipped with a warning naming it; the other events stay readable
    with pytest.warns(UserWarning, match=rf"events\.jsonl: skipping line 2: {message}"):
        run = runs.read_run(path)
    assert run.numbers == [0, 2] and run.skipped[0][0] == 2
    assert run.load(0) == masksets[0] and run.load(2) == masksets[2] and run.load(-1) == masksets[2]
    with pytest.raises(MaskFileError, match=r"event 1 is not readable: its line .* was skipped"):
        run.load(1)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("event", 5, "'event' is 5, expected 1"),
        ("event", True, "'event' is True"),
        ("file", "../outside.safetensors", "'file' .* is not a relative path inside"),
        ("file", "/abs/path.safetensors", "'file' .* is not a relative path inside"),
        ("has_weights", "no", "'has_weights'"),
        ("nnz", {"z.fc.weight": 1}, "'nnz' must map each layer"),
        ("density", 1.5, "'density' is 1.5"),
        ("step", "ten", "'step' is 'ten'"),
        ("kind", "", "'kind'"),
    ],
)
def test_run_with_invalid_event_fields(run_dir, key, value, message):
    path, _ = run_dir
    events = path / "events.jsonl"
    lines = events.read_text(encoding="utf-8").splitlines()
    obj = json.loads(lines[1])
    obj[key] = value
    lines[1] = json.dumps(obj)
    events.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(MaskFileError, match=rf"events\.jsonl line 2: {message}"):
        runs.read_run(path, strict=True)
    with pytest.warns(UserWarning, match=rf"events\.jsonl: skipping line 2: {message}"):
        assert runs.read_run(path).numbers == [0, 2]


def test_run_missing_and_corrupt_event_files(run_dir):
    path, _ = run_dir
    (path / "masks" / "event-000001.safetensors").unlink()
    with pytest.raises(
        MaskFileError, match=r"event-000001\.safetensors: the mask file of event 1 is missing"
    ):
        masktopo.load(path, event=1)
    assert masktopo.load(path, event=2).nnz() > 0  # other events are still readable
    f2 = path / "masks" / "event-000002.safetensors"
    f2.write_bytes(f2.read_bytes()[:-10])
    with pytest.raises(MaskFileError, match=r"event-000002\.safetensors: truncated or corrupt"):
        masktopo.load(path)


def test_run_event_file_disagreeing_with_run_json(run_dir):
    path, masksets = run_dir
    f0 = path / "masks" / "event-000000.safetensors"
    store.save(f0, masksets[0].select(["a.conv.weight", "z.fc.weight", "m.conv3d.weight"]))
    with pytest.raises(
        MaskFileError,
        match=r"event-000000\.safetensors: the layers of event 0 do not match run\.json",
    ):
        masktopo.load(path, event=0)
    store.save(f0, make_maskset(seed=7))  # right layers, other masks than events.jsonl records
    with pytest.raises(MaskFileError, match=r"nonzeros, events\.jsonl records"):
        masktopo.load(path, event=0)
    store.save(f0, masksets[0].without_weights())
    with pytest.raises(MaskFileError, match="has_weights=True, the file has no weights"):
        masktopo.load(path, event=0)


def test_run_json_problems(tmp_path, run_dir):
    path, _ = run_dir
    run_json = path / "run.json"
    good = json.loads(run_json.read_text())
    for edit, message in [
        (lambda d: d.update(format="other"), "'format' is 'other'"),
        (lambda d: d.update(format_version=3), "format_version 3 is not supported"),
        (lambda d: d.update(layers=[]), "holds no layers"),
        (lambda d: d.update(config=[1]), "'config' is not a JSON object"),
    ]:
        d = json.loads(json.dumps(good))
        edit(d)
        run_json.write_text(json.dumps(d))
        with pytest.raises(MaskFileError, match=rf"run\.json: .*{message}"):
            masktopo.load(path)
    run_json.write_text("{")
    with pytest.raises(MaskFileError, match=r"run\.json: not valid JSON"):
        masktopo.load(path)


def test_run_without_events(tmp_path):
    path = write_run(tmp_path / "run", [make_maskset()])
    (path / "events.jsonl").unlink()
    run = runs.read_run(path)
    assert run.n_events == 0
    with pytest.raises(MaskFileError, match="no mask events yet"):
        masktopo.load(path)


def test_run_with_npz_event_files(tmp_path):
    masksets = [make_maskset(seed=s) for s in range(2)]
    path = write_run(tmp_path / "run", masksets, suffix=".npz")
    assert masktopo.load(path, event=0) == masksets[0]


@pytest.mark.parametrize(
    "summary, kept, message",
    [
        ({"final": {"test_acc": "high", "train_acc": 0.5}}, {"final": {"train_acc": 0.5}},
         "final 'test_acc' is not a number (string)"),
        ({"final": [1, 2], "steps": 3}, {"steps": 3}, "'final' is not an object (array)"),
        ({"final": {"a": None, "b": float("nan")}}, None, None),  # null and NaN are numbers here
        ({"steps": 2.5, "density": True}, {}, "'steps' is not an integer (number)"),
        ({"history": {"a": 1}}, {}, "'history' is not an array (object)"),
        ({"history": [1, {"epoch": 1}]}, {"history": [{"epoch": 1}]},
         "1 of the 2 history entries are not objects"),
        ({"history": [{"epoch": 1, "acc": "x"}, {"epoch": 2, "acc": [0]}]},
         {"history": [{"epoch": 1}, {"epoch": 2}]},
         "history 'acc' is not a number in 2 of the 2 entries (string, array)"),
        ({"target": "high", "n_runs": 8, "input": {"x": "kept"}}, {"n_runs": 8, "input": {"x": "kept"}},
         "'target' is not a number (string)"),
    ],
)  # fmt: skip
def test_check_summary_leaves_out_wrongly_typed_values(summary, kept, message):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = runs.check_summary(summary, "RUN/summary.json")
    if message is None:
        assert not w and json.dumps(out) == json.dumps(summary)
        return
    assert out == kept
    texts = [str(x.message) for x in w]
    assert texts[0] == f"RUN/summary.json: {message}: left out", texts
    assert len(texts) == (2 if "density" in summary else 1), texts  # one warning per value


def test_run_checked_summary(run_dir):
    run_dir = run_dir[0]
    (run_dir / "summary.json").write_text(json.dumps({"final": {"test_acc": "high"}}))
    run = runs.read_run(run_dir)
    assert run.summary() == {"final": {"test_acc": "high"}}  # as written
    with pytest.warns(UserWarning, match=r"summary\.json: final 'test_acc' is not a number"):
        assert run.checked_summary() == {"final": {}}


def test_a_missing_line_loses_only_its_event(run_dir):
    """A line gone from the middle of events.jsonl (not a bad line: nothing left of it) used to
    make every later event unreadable ("'event' is 2, expected 1" on each later line); now its
    event is reported missing once and the later events stay readable. A resumed run (strict)
    refuses the log."""
    path, masksets = run_dir
    events = path / "events.jsonl"
    lines = events.read_text(encoding="utf-8").splitlines()
    events.write_text("\n".join([lines[0], lines[2]]) + "\n", encoding="utf-8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = runs.read_run(path)
    assert [str(w.message) for w in caught] == [
        f"{events}: event 1 is missing before line 2 (its line is gone)"]  # fmt: skip
    assert run.numbers == [0, 2] and run.skipped == []
    assert run.load(2) == masksets[2]
    with pytest.raises(MaskFileError, match=r"event 1 is not readable: its line .* is missing"):
        run.load(1)
    with pytest.raises(MaskFileError, match=r"events\.jsonl: event 1 is missing"):
        runs.read_run(path, strict=True)


def test_a_repeated_or_backward_event_number_is_a_bad_line(run_dir):
    path, _ = run_dir
    events = path / "events.jsonl"
    lines = events.read_text(encoding="utf-8").splitlines()
    events.write_text("\n".join([lines[0], lines[1], lines[1], lines[2]]) + "\n", encoding="utf-8")
    with pytest.warns(UserWarning, match=r"skipping line 3: 'event' is 1, expected 2"):
        assert runs.read_run(path).numbers == [0, 1, 2]
