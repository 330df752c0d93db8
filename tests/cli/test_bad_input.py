"""Bad input through the command line (issue 2, "Bad input").

Every problem listed there gives exactly one line ``masktopo: error: <file>: <problem>`` on stderr,
exit code 2, no traceback, nothing on stdout, and writes nothing: a new ``--out`` file does not
appear, an existing one keeps its bytes, and no temporary file is left behind.

Each bad file is built small in ``tmp_path``. Every case runs in-process through ``main([...])``
for ``analyze`` and ``info``, with warnings recorded (a real run would print them on stderr); a
representative subset also runs as a real ``python -m masktopo`` subprocess, where an uncaught
exception would show as a traceback.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
import random
import shutil
import struct
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import run_masktopo
from safetensors import safe_open
from safetensors.torch import save_file

import masktopo
from masktopo import analysis, store
from masktopo.cli.main import main
from masktopo.masks import MaskSet

ROOT = Path(__file__).resolve().parents[2]
PREVIOUS = b"previous results\n"


# -- building blocks ------------------------------------------------------------------------------
def _maskset(*, empty: bool = False) -> MaskSet:
    g = torch.Generator().manual_seed(0)
    masks = {
        "conv.weight": torch.rand(6, 3, 3, 3, generator=g) < 0.5,
        "fc.weight": torch.rand(8, 10, generator=g) < 0.5,
    }
    if empty:
        masks["fc.weight"] = torch.zeros(8, 10, dtype=torch.bool)
    weights = {n: torch.randn(m.shape, generator=g) * m for n, m in masks.items()}
    return MaskSet(masks, weights=weights)


def _good(directory: Path, suffix: str, **kwargs) -> Path:
    path = directory / f"good{suffix}"
    if suffix == ".legacy.pt":
        state = {f"{n}_mask": m.float() for n, m in _maskset().items()}
        torch.save(state, path, _use_new_zipfile_serialization=False)
    else:
        masktopo.save(path, _maskset(**kwargs))
    return path


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated(directory: Path, suffix: str) -> Path:
    data = _good(directory, suffix).read_bytes()
    return _bytes(directory / f"truncated{suffix}", data[: len(data) // 2])


def _safetensors_parts(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}


def _rewritten_safetensors(directory: Path, edit: Callable[[dict, dict], None]) -> Path:
    metadata, tensors = _safetensors_parts(_good(directory, ".safetensors"))
    edit(metadata, tensors)
    path = directory / "edited.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    return path


def _rewritten_npz(directory: Path, edit: Callable[[dict], None]) -> Path:
    with np.load(_good(directory, ".npz"), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    edit(arrays)
    path = directory / "edited.npz"
    np.savez_compressed(path, **arrays)
    return path


def _edited_zip(directory: Path, edit: Callable[[bytearray, list[zipfile.ZipInfo], int], None]):
    """A masktopo .npz with its raw bytes edited: ``edit(data, members, central_dir_offset)``."""
    good = _good(directory, ".npz")
    with zipfile.ZipFile(good) as z:
        members = z.infolist()
        cd_offset = z.start_dir
    data = bytearray(good.read_bytes())
    edit(data, members, cd_offset)
    return _bytes(directory / "damaged.npz", bytes(data))


def _flip_member_data(data: bytearray, members: list[zipfile.ZipInfo], _cd: int) -> None:
    info = next(m for m in members if m.filename == "mask/fc.weight.npy")
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.compress_size // 2] ^= 0x10


def _cut_directory(data: bytearray, _members: list, cd_offset: int) -> None:
    """Give the first central-directory entry a comment that swallows all the others: zipfile
    then sees one member and no error."""
    cd_end = data.rindex(b"PK\x05\x06")
    name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, cd_offset + 28)
    assert comment_len == 0
    struct.pack_into("<H", data, cd_offset + 32, cd_end - cd_offset - 46 - name_len - extra_len)


def _flag_encrypted(data: bytearray, _members: list, cd_offset: int) -> None:
    struct.pack_into(
        "<H", data, cd_offset + 8, struct.unpack_from("<H", data, cd_offset + 8)[0] | 1
    )


class Payload:
    """Unpickling runs ``func(*args)``, which writes the marker file: arbitrary code."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _payloads(marker: Path) -> dict[str, Payload]:
    write = f"open({str(marker)!r}, 'w').write('code ran')"
    return {
        "exec": Payload(exec, write),  # a global torch's unpickler does not allow
        "os_system": Payload(os.system, f'{sys.executable} -c "{write}"'),  # a blocked module
    }


def _evil(directory: Path, kind: str, marker: Path, *, legacy: bool = False) -> Path:
    """A checkpoint whose unpickling with weights_only=False writes ``marker``; checked live."""
    path = directory / f"evil-{kind}{'-legacy' if legacy else ''}.pt"
    if kind == "raw_pickle":  # not written by torch.save at all: a plain pickle
        path.write_bytes(pickle.dumps(_payloads(marker)["exec"], protocol=2))
    else:
        state = {"fc.weight_mask": torch.ones(2, 3), "extra": {"payload": _payloads(marker)[kind]}}
        torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    # The payload is live: an unsafe load of a copy runs it.
    copy = Path(shutil.copy(path, directory / "live-copy.pt"))
    if kind == "raw_pickle":
        pickle.loads(copy.read_bytes())
    else:
        torch.load(copy, weights_only=False)
    assert marker.read_text() == "code ran"
    marker.unlink()
    copy.unlink()
    return path


def _checkpoint(directory: Path, name: str, state: dict) -> Path:
    path = directory / name
    torch.save(state, path)
    return path


def _with_value(t: torch.Tensor, value: float, index=(0, 0)) -> torch.Tensor:
    t = t.clone()
    t[index] = value
    return t


def _prune_state(*, weight=None, mask=None) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    m = (torch.rand(8, 10, generator=g) < 0.5).float() if mask is None else mask
    w = torch.randn(8, 10, generator=g) if weight is None else weight
    return {"fc.weight_mask": m, "fc.weight_orig": w, "fc.bias": torch.zeros(8)}


# -- the cases ------------------------------------------------------------------------------------
class Bad(NamedTuple):
    """A bad input: the PATHs to pass (the last is the bad one), the words the error must hold,
    and what ``info`` does with it: "error" or "ok" (documented: info does not check weight values
    nor refuse empty layers); ``args`` are analyze options that make the case bad."""

    paths: list[Path]
    problem: tuple[str, ...]
    info: str = "error"
    args: tuple[str, ...] = ()


CASES: dict[str, Callable[[Path, Path], Bad]] = {}


def case(name: str):
    def register(build):
        CASES[name] = build
        return build

    return register


for _sfx, _what in ((".safetensors", "safetensors file"), (".npz", ".npz file")):
    for _how in ("truncated", "garbage", "empty"):

        def _build(d, m, sfx=_sfx, how=_how, what=_what):
            if how == "truncated":
                path = _truncated(d, sfx)
            elif how == "garbage":
                path = _bytes(d / f"garbage{sfx}", random.Random(0).randbytes(600))
            else:
                path = _bytes(d / f"empty{sfx}", b"")
            return Bad([path], ("truncated or corrupt", what))

        case(f"{_how}{_sfx}")(_build)

for _sfx in (".pt", ".legacy.pt"):
    for _how in ("truncated", "garbage", "empty"):

        def _build(d, m, sfx=_sfx, how=_how):
            if how == "truncated":
                path = _truncated(d, sfx)
            elif how == "garbage":
                path = _bytes(d / "garbage.pt", random.Random(0).randbytes(600))
            else:
                path = _bytes(d / "empty.pt", b"")
            return Bad([path], ("truncated or corrupt checkpoint",))

        if _sfx == ".pt" or _how == "truncated":
            case(f"{_how}{_sfx}")(_build)


@case("flipped_bit_in_packed_mask")
def _(d, m):
    def flip(metadata, tensors):
        tensors["mask/fc.weight"][3] ^= 0x04

    path = _rewritten_safetensors(d, flip)
    return Bad([path], ("'fc.weight'", "set bits", "metadata records nnz", "corrupt"))


@case("flipped_byte_in_packed_mask_bytes")
def _(d, m):
    good = _good(d, ".safetensors")
    data = bytearray(good.read_bytes())
    n = int.from_bytes(data[:8], "little")
    start, _end = json.loads(data[8 : 8 + n])["mask/conv.weight"]["data_offsets"]
    data[8 + n + start] ^= 0x80
    return Bad([_bytes(d / "flipped.safetensors", bytes(data))], ("'conv.weight'", "corrupt"))


@case("bad_metadata_json")
def _(d, m):
    def cut(metadata, tensors):
        metadata["layers"] = metadata["layers"][:-5]

    path = _rewritten_safetensors(d, cut)
    return Bad([path], ("metadata 'layers' is not valid JSON",))


@case("bad_safetensors_header_json")
def _(d, m):
    data = bytearray(_good(d, ".safetensors").read_bytes())
    data[8] = ord("x")  # the header's opening brace
    return Bad([_bytes(d / "header.safetensors", bytes(data))], ("truncated or corrupt",))


@case("bad_npz_header_json")
def _(d, m):
    def cut(arrays):
        arrays["__masktopo__"] = np.array(str(arrays["__masktopo__"])[:-3])

    return Bad([_rewritten_npz(d, cut)], ("'__masktopo__' is not valid JSON",))


@case("npz_member_not_an_array")
def _(d, m):
    path = d / "plain.npz"
    with zipfile.ZipFile(path, "w") as z:  # a zip, named .npz, of no .npy member
        z.writestr("readme.txt", "hello")
    return Bad([path], ("not an .npz file of arrays: member 'readme.txt' is not a .npy array",))


@case("npz_flipped_byte_in_member")
def _(d, m):
    return Bad([_edited_zip(d, _flip_member_data)], ("truncated or corrupt .npz file",))


@case("npz_damaged_zip_directory")
def _(d, m):
    path = _edited_zip(d, _cut_directory)
    return Bad([path], ("truncated or corrupt .npz file", "lists 1 of its 5 members"))


@case("npz_member_flagged_encrypted")
def _(d, m):
    return Bad([_edited_zip(d, _flag_encrypted)], ("truncated or corrupt .npz file", "encrypted"))


for _kind, _legacy, _name in (
    ("exec", False, "exec"),
    ("exec", True, "exec"),
    ("os_system", False, "system"),
    ("os_system", True, "system"),
    ("raw_pickle", True, "exec"),
):

    def _build(d, m, kind=_kind, legacy=_legacy, name=_name):
        path = _evil(d, kind, m, legacy=legacy)
        return Bad([path], ("refusing to unpickle", "Python objects other than tensors", name))

    case(f"code_in_checkpoint_{_kind}{'_legacy' if _legacy else ''}")(_build)


@case("whole_module_pickled")
def _(d, m):
    path = d / "model.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(3, 2)), path)
    return Bad([path], ("refusing to unpickle", "Sequential"))


@case("missing_file")
def _(d, m):
    return Bad([d / "nope.safetensors"], ("no such file or directory",))


@case("empty_directory")
def _(d, m):
    (d / "run").mkdir()
    return Bad([d / "run"], ("not a run directory",))


@case("directory_of_mask_files")
def _(d, m):
    (d / "run").mkdir()
    _good(d / "run", ".safetensors")
    return Bad([d / "run"], ("not a run directory", "run.json"))


@case("unsupported_suffix")
def _(d, m):
    return Bad([_bytes(d / "masks.txt", b"0 1 1 0\n")], ("unsupported file type '.txt'",))


@case("non_binary_mask_pt")
def _(d, m):
    path = _checkpoint(d, "p.pt", _prune_state(mask=torch.full((8, 10), 2.0)))
    return Bad([path], ("'fc.weight'", "values other than 0 and 1", "2.0"))


@case("nan_mask_pt")
def _(d, m):
    mask = _with_value(torch.ones(8, 10), float("nan"))
    path = _checkpoint(d, "p.pt", _prune_state(mask=mask))
    return Bad([path], ("'fc.weight'", "mask has NaN or inf"))


@case("non_binary_mask_npz")
def _(d, m):
    path = d / "foreign.npz"
    np.savez(path, **{"fc.weight_mask": np.full((8, 10), 0.5, np.float32)})
    return Bad([path], ("'fc.weight'", "values other than 0 and 1", "0.5"))


@case("non_binary_mask_safetensors")
def _(d, m):
    path = d / "foreign.safetensors"
    save_file({"fc.weight_mask": _with_value(torch.ones(8, 10), -1.0, (7, 9))}, str(path))
    return Bad([path], ("'fc.weight'", "values other than 0 and 1", "-1.0"))


@case("non_bool_mask_in_masktopo_npz")
def _(d, m):
    def to_uint8(arrays):
        arrays["mask/fc.weight"] = arrays["mask/fc.weight"].astype(np.uint8) * 2

    return Bad([_rewritten_npz(d, to_uint8)], ("'fc.weight'", "expected bool"))


# A .pt's weight shapes are checked even when the weights are not used (info), as for
# safetensors and npz.
@case("weight_shape_mismatch_pt")
def _(d, m):
    path = _checkpoint(d, "p.pt", _prune_state(weight=torch.randn(10, 8)))
    return Bad([path], ("'fc.weight'", "weight shape (10, 8) does not match mask shape (8, 10)"))


@case("weight_shape_mismatch_safetensors")
def _(d, m):
    def reshape(metadata, tensors):
        tensors["weight/fc.weight"] = tensors["weight/fc.weight"].reshape(10, 8).contiguous()

    path = _rewritten_safetensors(d, reshape)
    return Bad([path], ("'fc.weight'", "weight shape (10, 8) does not match mask shape (8, 10)"))


@case("weight_shape_mismatch_npz")
def _(d, m):
    def reshape(arrays):
        arrays["weight/fc.weight"] = arrays["weight/fc.weight"].reshape(10, 8)

    path = _rewritten_npz(d, reshape)
    return Bad([path], ("'fc.weight'", "weight shape (10, 8) does not match mask shape (8, 10)"))


for _value, _word in ((float("nan"), "NaN"), (float("inf"), "inf"), (float("-inf"), "inf")):
    for _fmt in ("pt", "safetensors", "npz"):

        def _build(d, m, value=_value, word=_word, fmt=_fmt):
            if fmt == "pt":
                weight = _with_value(torch.randn(8, 10), value, (2, 3))
                path = _checkpoint(d, "p.pt", _prune_state(weight=weight))
            else:
                good = _maskset()
                weights = good.weights
                weights["fc.weight"] = _with_value(weights["fc.weight"], value, (2, 3))
                # bypass MaskSet validation: write the tensors the way a buggy tool would
                path = store.save(d / f"w.{fmt}", good.without_weights())
                if fmt == "safetensors":
                    meta, tensors = _safetensors_parts(path)
                    meta["has_weights"] = "true"
                    tensors.update({f"weight/{n}": w for n, w in weights.items()})
                    save_file(tensors, str(path), metadata=meta)
                else:
                    with np.load(path) as z:
                        arrays = {k: z[k] for k in z.files}
                    header = json.loads(str(arrays["__masktopo__"]))
                    header["has_weights"] = True
                    arrays["__masktopo__"] = np.array(json.dumps(header))
                    arrays.update({f"weight/{n}": w.numpy() for n, w in weights.items()})
                    np.savez_compressed(path, **arrays)
            return Bad([path], ("'fc.weight'", f"weight has 1 {word} value(s)"), "ok")

        case(f"{_word.lower()}{'' if _value > 0 or _value != _value else '_neg'}_weight_{_fmt}")(
            _build
        )


@case("all_zero_layer")
def _(d, m):
    path = _good(d, ".safetensors", empty=True)
    return Bad([path], ("'fc.weight'", "no kept entry", "--allow-empty-layers"), "ok")


@case("dense_checkpoint_without_masks")
def _(d, m):
    path = _checkpoint(d, "dense.pt", {"state_dict": {"fc.weight": torch.randn(8, 10)}})
    return Bad([path], ("no masks found", "--zeros-as-mask"))


@case("good_file_then_bad_file")
def _(d, m):
    return Bad([_good(d, ".safetensors"), _truncated(d, ".npz")], ("truncated or corrupt",))


@case("event_for_a_file")
def _(d, m):
    # The file is good; only analyze's --event is wrong (info, which takes no --event, is fine).
    return Bad([_good(d, ".safetensors")], ("--event", "run directory"), "ok", ("--event", "0"))


def _build_case(name: str, tmp_path: Path) -> tuple[Bad, Path, Path, Path]:
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    marker = tmp_path / "marker"
    return CASES[name](inputs, marker), inputs, outputs, marker


# -- assertions -----------------------------------------------------------------------------------
def _snapshot(*directories: Path) -> dict[str, str]:
    """Every file under ``directories`` (temporary files included) with a hash of its bytes."""
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for d in directories
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }


def _assert_one_line_error(rc: int, out: str, err: str, *texts: str) -> str:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("masktopo: error: "), err
    for text in texts:
        assert text in lines[0], (text, lines[0])
    assert out == ""
    return lines[0]


def _main(capsys, *argv) -> tuple[int, str, str]:
    """``main(argv)`` in-process; a warning fails the test (a real run prints it on stderr)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert not caught, [str(w.message) for w in caught]
    return rc, out, err


# -- every case, in-process -----------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CASES))
def test_analyze_bad_input(name, tmp_path, capsys):
    bad, inputs, outputs, marker = _build_case(name, tmp_path)
    existing = outputs / "existing.csv"
    existing.write_bytes(PREVIOUS)
    before = _snapshot(inputs, outputs)
    for out_file in (outputs / "new.csv", existing):
        rc, out, err = _main(capsys, "analyze", *bad.paths, *bad.args, "--out", out_file)
        _assert_one_line_error(rc, out, err, f"masktopo: error: {bad.paths[-1]}: ", *bad.problem)
    assert _snapshot(inputs, outputs) == before  # no new file, no temp file, nothing changed
    assert not marker.exists()


@pytest.mark.parametrize("name", sorted(CASES))
def test_info_bad_input(name, tmp_path, capsys):
    bad, inputs, _, marker = _build_case(name, tmp_path)
    before = _snapshot(inputs)
    rc, out, err = _main(capsys, "info", *bad.paths)
    if bad.info == "error":
        _assert_one_line_error(rc, out, err, f"masktopo: error: {bad.paths[-1]}: ", *bad.problem)
    else:
        assert rc == 0 and err == "", err
        assert str(bad.paths[-1]) in out and "fc.weight" in out
    assert _snapshot(inputs) == before
    assert not marker.exists()


# -- a representative subset as real subprocesses -------------------------------------------------
@pytest.mark.parametrize(
    ("command", "name"),
    [
        ("analyze", "code_in_checkpoint_os_system"),
        ("info", "code_in_checkpoint_exec_legacy"),
        ("analyze", "truncated.safetensors"),
        ("info", "npz_damaged_zip_directory"),
        ("analyze", "nan_weight_pt"),
        ("analyze", "all_zero_layer"),
    ],
)
def test_subprocess_bad_input(command, name, tmp_path):
    bad, inputs, outputs, marker = _build_case(name, tmp_path)
    out_args: list = []
    if command == "analyze":
        (outputs / "existing.csv").write_bytes(PREVIOUS)
        out_args = ["--out", outputs / "existing.csv"]
    before = _snapshot(inputs, outputs)
    proc = run_masktopo(command, *bad.paths, *out_args, cwd=tmp_path)
    _assert_one_line_error(
        proc.returncode, proc.stdout, proc.stderr, f"{bad.paths[-1]}: ", *bad.problem
    )
    assert _snapshot(inputs, outputs) == before
    assert not marker.exists()  # the payload did not run in the real command either


def test_subprocess_cuda_on_a_cpu_only_machine(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    path = _good(tmp_path, ".safetensors")
    proc = run_masktopo(
        "analyze", path, "--device", "cuda", "--out", tmp_path / "m.csv", cwd=tmp_path
    )
    _assert_one_line_error(proc.returncode, proc.stdout, proc.stderr, "--device cuda", "CUDA")
    assert not (tmp_path / "m.csv").exists()


@pytest.mark.parametrize(
    ("option", "value", "choices"),
    [("--conv", "diagonal", ("unrolled", "rolled")), ("--format", "xml", ("table", "csv"))],
)
def test_unknown_choice_is_an_argparse_usage_error(option, value, choices, tmp_path, capsys):
    path = _good(tmp_path, ".safetensors")
    out_file = tmp_path / "m.csv"
    rc, out, err = _main(capsys, "analyze", path, option, value, "--out", out_file)
    assert rc == 2 and out == "" and "Traceback" not in err
    assert err.startswith("usage: masktopo analyze")
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"masktopo analyze: error: argument {option}: invalid choice: '{value}'")
    assert all(f"'{c}'" in last for c in choices)
    assert not out_file.exists()


def test_subprocess_unknown_choice(tmp_path):
    path = _good(tmp_path, ".safetensors")
    proc = run_masktopo("analyze", path, "--conv", "diagonal", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert "argument --conv: invalid choice: 'diagonal'" in proc.stderr.splitlines()[-1]


# -- arguments checked before any file is read ----------------------------------------------------
def test_unknown_metric_lists_the_known_ones(tmp_path, capsys):
    existing = tmp_path / "m.csv"
    existing.write_bytes(PREVIOUS)
    for path in (_good(tmp_path, ".safetensors"), tmp_path / "missing.pt"):
        rc, out, err = _main(capsys, "analyze", path, "--metrics", "mu0,bogus", "--out", existing)
        line = _assert_one_line_error(rc, out, err, "unknown metric 'bogus'")
        known = line.split("known: ", 1)[1].split(", ")
        assert sorted(known) == sorted(analysis.METRICS)
    assert existing.read_bytes() == PREVIOUS


def test_cuda_on_a_cpu_only_machine(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out_file = tmp_path / "m.csv"
    rc, out, err = _main(
        capsys, "analyze", _good(tmp_path, ".npz"), "--device", "cuda", "--out", out_file
    )
    _assert_one_line_error(rc, out, err, "--device cuda", "no CUDA device")
    assert not out_file.exists()


# -- the opt-in flags the errors point to ---------------------------------------------------------
def test_allow_empty_layers_reports_nan_with_a_reason(tmp_path, capsys):
    path = _good(tmp_path, ".safetensors", empty=True)
    rc, out, err = _main(capsys, "analyze", path, "--allow-empty-layers", "--format", "json")
    assert rc == 0, err
    rows = {r["layer"]: r for r in json.loads(out)}
    empty, full = rows["fc.weight"], rows["conv.weight"]
    assert empty["n_edges"] == 0 and full["n_edges"] == _maskset().nnz("conv.weight")
    for metric in ("mu0", "mu_hat", "spectral_gap", "ramanujan_gap", "weighted_mu0"):
        assert empty[metric] is None  # NaN in the frame, null in JSON: never 0
        assert full[metric] is not None
    assert empty["reason"] and "edges" in empty["reason"]
    df = pd.read_csv(
        io.StringIO(_main(capsys, "analyze", path, "--allow-empty-layers", "--format", "csv")[1])
    )
    row = df.set_index("layer").loc["fc.weight"]
    assert math.isnan(row["mu0"]) and isinstance(row["reason"], str) and row["reason"]


def test_zeros_as_mask_for_analyze_and_info(tmp_path, capsys):
    g = torch.Generator().manual_seed(2)
    weight = torch.randn(8, 10, generator=g) * (torch.rand(8, 10, generator=g) < 0.4)
    conv = torch.randn(6, 3, 3, 3, generator=g) * (torch.rand(6, 3, 3, 3, generator=g) < 0.7)
    path = _checkpoint(
        tmp_path,
        "dense.pt",
        {"model": {"conv.weight": conv, "fc.weight": weight, "fc.bias": torch.ones(8)}},
    )
    for command in ("analyze", "info"):
        rc, out, err = _main(capsys, command, path)
        _assert_one_line_error(rc, out, err, str(path), "--zeros-as-mask")
    rc, out, err = _main(capsys, "analyze", path, "--zeros-as-mask", "--format", "json")
    assert rc == 0, err
    rows = {r["layer"]: r for r in json.loads(out)}
    assert rows["fc.weight"]["n_edges"] == int(torch.count_nonzero(weight))
    assert rows["conv.weight"]["n_edges"] == int(torch.count_nonzero(conv))
    assert rows["fc.weight"]["weighted_mu0"] is not None
    rc, out, err = _main(capsys, "info", path, "--zeros-as-mask", "--json")
    assert rc == 0, err
    (described,) = json.loads(out)
    assert described["has_weights"] is True
    assert described["meta"]["source"]["layout"] == "zeros_as_mask"
    layers = {x["name"]: x for x in described["layers"]}
    assert list(layers) == ["conv.weight", "fc.weight"]  # the 1-D bias is not a layer
    assert layers["fc.weight"]["nnz"] == int(torch.count_nonzero(weight))
    assert layers["conv.weight"]["nnz"] == int(torch.count_nonzero(conv))
    # the library function: same semantics as load(); ignored for a file that has masks
    assert masktopo.info(path, zeros_as_mask=True) == described
    good = _good(tmp_path, ".safetensors")
    assert masktopo.info(good, zeros_as_mask=True) == masktopo.info(good)
    with pytest.raises(masktopo.MaskFileError, match="zeros_as_mask=True"):
        masktopo.info(path)


# -- valid input that must not crash either -------------------------------------------------------
@pytest.mark.parametrize(
    "dtype",
    [
        torch.float16,
        torch.bfloat16,
        torch.float8_e4m3fn,
    ],
)
def test_low_precision_weights_are_analyzed(dtype, tmp_path, capsys):
    ms = _maskset()
    weights = {n: w.to(dtype) for n, w in ms.weights.items()}
    path = store.save(tmp_path / "low.safetensors", ms.with_weights(weights))
    rc, out, err = _main(capsys, "analyze", path, "--format", "json", "--no-network")
    assert rc == 0, err
    rows = {r["layer"]: r for r in json.loads(out)}
    exact = analysis.layer_metrics(ms["fc.weight"], weights["fc.weight"].double())
    assert rows["fc.weight"]["weighted_mu0"] == pytest.approx(exact["weighted_mu0"], rel=1e-9)


def test_allow_empty_layers_on_a_file_of_empty_layers_only(tmp_path, capsys):
    """Every layer empty: the network row's ratios are 0/0, NaN without a numpy warning on
    stderr (the audit saw "masktopo: warning: invalid value encountered in scalar divide")."""
    from masktopo import MaskSet, save

    path = save(tmp_path / "empty.safetensors",
                MaskSet({"fc.weight": torch.zeros(10, 20, dtype=torch.bool)}))  # fmt: skip
    rc, out, err = _main(capsys, "analyze", path, "--allow-empty-layers", "--format", "json")
    assert rc == 0 and err == ""
    rows = {r["layer"]: r for r in json.loads(out)}
    assert rows["fc.weight"]["n_edges"] == 0
    assert all(r.get("deg_out_mean") is None for r in rows.values())
