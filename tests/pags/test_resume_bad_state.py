"""`--resume` of a PAGS run whose resume point was damaged: one line naming the file and the
field, and nothing in the run directory written."""

import hashlib
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _stubs import NoisyMagnitude, base_mask, theta

from masktopo.errors import MaskFileError
from masktopo.pags import PagsConfig, run_pags
from masktopo.runs.layout import CANDIDATES_FILE, STATE_FILE

DENSITY = 0.3
CFG = PagsConfig(n=24, chunk=4, snapshot_every=4, seed=11)


@pytest.fixture(scope="module")
def w():
    return theta(0)


@pytest.fixture(scope="module")
def base(w):
    return base_mask(w, DENSITY)


@pytest.fixture(scope="module")
def stopped(w, base, tmp_path_factory):
    """A run stopped after 8 candidates (its resume point says next_t = 9)."""
    out = tmp_path_factory.mktemp("pags") / "run"
    run_pags(base, w, NoisyMagnitude(w, DENSITY, CFG.seed), CFG, out=out, stop=lambda t: t >= 8)
    assert json.loads((out / STATE_FILE).read_text())["next_t"] == 9
    return out


def _digest(out):
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def _copy_with_state(stopped, tmp_path, **change):
    out = tmp_path / "run"
    shutil.copytree(stopped, out)
    state = json.loads((out / STATE_FILE).read_text())
    for key, value in change.items():
        if value is KeyError:
            del state[key]
        else:
            state[key] = value
    (out / STATE_FILE).write_text(json.dumps(state))
    return out


def _resume_fails(w, base, out, match):
    before = _digest(out)
    with pytest.raises(MaskFileError, match=match) as err:
        run_pags(base, w, NoisyMagnitude(w, DENSITY, CFG.seed), CFG, out=out, resume=True)
    assert "\n" not in str(err.value)
    assert _digest(out) == before  # nothing written, nothing removed


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"next_t": "five"}, r"state\.json: next_t is 'five', not an integer"),
        ({"next_t": -5}, r"next_t is -5; the first candidate is 1"),
        ({"next_t": 0}, r"next_t is 0; the first candidate is 1"),
        ({"next_t": 100}, r"has scored 99 candidates already, more than n = 24"),
        ({"next_t": True}, r"next_t is True, not an integer"),
        ({"changed": KeyError}, r"has no 'changed'"),
        ({"changed": "yes"}, r"changed is 'yes', not true or false"),
        ({"snapshots": [0, 12]}, r"snapshots must list candidates 0 … 8"),
        ({"snapshots": "0"}, r"snapshots must list candidates"),
        ({"best_t": 9}, r"best_t is 9, not a candidate before next_t = 9"),
        ({"best_scores": "x"}, r"best_scores cannot be read \(TypeError"),
        ({"best_scores": {"layers": ["fc1.weight"]}}, r"best_scores cannot be read \(KeyError"),
        ({"best_file": "/etc/passwd"}, r"best_file '/etc/passwd' is not a file of the run"),
        ({"best_file": "../../x.safetensors"}, r"best_file '\.\./\.\./x\.safetensors' is not"),
        ({"best_file": 3}, r"best_file 3 is not a file of the run directory"),
    ],
)
def test_a_damaged_state_is_refused_before_anything_is_written(
    w, base, stopped, tmp_path, change, match
):
    out = _copy_with_state(stopped, tmp_path, **change)
    _resume_fails(w, base, out, match)


def test_best_scores_of_other_layers_are_refused(w, base, stopped, tmp_path):
    state = json.loads((stopped / STATE_FILE).read_text())
    scores = {k: v[:1] if isinstance(v, list) else v for k, v in state["best_scores"].items()}
    scores["layers"] = ["other.weight"]
    out = _copy_with_state(stopped, tmp_path, best_scores=scores)
    _resume_fails(w, base, out, r"best_scores are not of this run's layers")


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        ("empty", r"candidates\.parquet: cannot be read"),
        ("half", r"candidates\.parquet: cannot be read"),
        ("schema", r"is not a PAGS candidates table \(no t column\)"),
        ("short", r"does not hold one row for each candidate 0 … 8"),
    ],
)
def test_a_damaged_candidates_table_is_refused(w, base, stopped, tmp_path, damage, match):
    out = tmp_path / "run"
    shutil.copytree(stopped, out)
    path = out / CANDIDATES_FILE
    data = path.read_bytes()
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "half":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "schema":
        pq.write_table(pa.table({"step": [0, 1]}), path)
    else:  # the rows of candidates 0 … 4 only
        table = pq.read_table(path)
        pq.write_table(table.filter(pa.compute.less(table["t"], 5)), path)
    _resume_fails(w, base, out, match)


def test_an_undamaged_copy_resumes(w, base, stopped, tmp_path):
    """The copies above differ only in what each test damages."""
    out = _copy_with_state(stopped, tmp_path)
    done = run_pags(base, w, NoisyMagnitude(w, DENSITY, CFG.seed), CFG, out=out, resume=True)
    assert done.n_done == 24
