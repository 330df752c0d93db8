"""``masktopo analyze`` / ``info`` on Hugging Face model folders of PyTorch pickles
(``pytorch_model-0000i-of-0000n.bin`` + ``pytorch_model.bin.index.json``): the output of the same
weights as safetensors, and bad folders as one-line errors naming the file, with nothing written
and no code from a file run."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import warnings
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch
from _llm_files import SHARD_2, tiny_llama_tensors
from cli_helpers import run_masktopo

from masktopo.cli.main import main
from masktopo.store.hf_folder import BIN_FILE, BIN_INDEX_FILE, write_folder


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    base = tmp_path_factory.mktemp("hf_bin")
    t = tiny_llama_tensors()
    write_folder(base / "bin", t, shards=2, fmt="bin")
    write_folder(base / "st", t, shards=2)
    return base


def _csv(proc) -> pd.DataFrame:
    assert proc.returncode == 0, proc.stderr
    return pd.read_csv(io.StringIO(proc.stdout), keep_default_na=False, na_values=[""])


def test_analyze_equals_safetensors(model):
    args = ("--include", "embeddings,head", "--format", "csv")
    a = _csv(run_masktopo("analyze", model / "bin", *args, cwd=model))
    b = _csv(run_masktopo("analyze", model / "st", *args, cwd=model))
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 17  # 16 layers + the network row
    layers = a[a["level"] == "layer"]
    assert (layers.loc[layers["layer"].str.contains("up_proj"), "nm"] == "2:4").all()


def test_info_of_a_bin_folder(model):
    out = run_masktopo("info", model / "bin", cwd=model)
    assert out.returncode == 0, out.stderr
    assert "format: hf_folder" in out.stdout and "N:M" in out.stdout
    assert "not analyzed: 7 tensors (1 embedding, 1 head, 5 norm" in out.stdout
    ref = run_masktopo("info", model / "st", cwd=model)
    assert out.stdout.replace(str(model / "bin"), "X") == ref.stdout.replace(str(model / "st"), "X")
    d = json.loads(run_masktopo("info", model / "bin", "--json", "--layers", "*.up_proj.*",
                                cwd=model).stdout)[0]  # fmt: skip
    assert d["n_layers"] == 2 and d["n_files"] == 2 and {x["nm"] for x in d["layers"]} == {"2:4"}


# -- bad folders ---------------------------------------------------------------------------------


def _flip_in_record(path: Path, pick) -> None:
    """Flip one byte in the middle of the zip record ``pick(infos)`` chooses."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = pick(z.infolist())
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    data[info.header_offset + 30 + name_len + extra_len + info.file_size // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _largest_tensor_record(infos: list[zipfile.ZipInfo]) -> zipfile.ZipInfo:
    return max((i for i in infos if "/data/" in i.filename), key=lambda i: i.file_size)


class _Payload:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _bad(d: Path, case: str, marker: Path) -> tuple[Path, str]:
    """Damage the copied folder ``d``; the file the error must name and words it must hold."""
    shard = d / SHARD_2
    if case == "missing_shard":
        shard.unlink()
        return shard, f"is named in {BIN_INDEX_FILE}"
    if case == "outside":
        index = json.loads((d / BIN_INDEX_FILE).read_text())
        index["weight_map"] = {k: f"../{v}" for k, v in index["weight_map"].items()}
        (d / BIN_INDEX_FILE).write_text(json.dumps(index))
        return d / BIN_INDEX_FILE, "points outside the model folder"
    if case == "truncated":
        shard.write_bytes(shard.read_bytes()[:-64])
        return shard, "truncated or corrupt checkpoint"
    if case == "flipped_tensor_byte":
        _flip_in_record(shard, _largest_tensor_record)
        return shard, "do not match the CRC-32 checksum"
    if case == "code":
        code = f"open({str(marker)!r}, 'w').write('code ran')"
        torch.save({"model.layers.1.mlp.up_proj.weight": torch.ones(2, 2),
                    "x": _Payload(exec, code)}, shard)  # fmt: skip
        return shard, "refusing to unpickle"
    if case == "not_a_state_dict":
        torch.save([torch.ones(2, 2)], shard)
        return shard, "holds a list, not a state dict"
    assert case == "legacy"
    for p in d.glob("pytorch_model*"):
        p.unlink()
    torch.save(tiny_llama_tensors(1), d / BIN_FILE, _use_new_zipfile_serialization=False)
    return d / BIN_FILE, "cannot be memory-mapped"


def _snapshot(*directories: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in directories for p in sorted(d.rglob("*")) if p.is_file()}  # fmt: skip


CASES = ["missing_shard", "outside", "truncated", "flipped_tensor_byte", "code",
         "not_a_state_dict", "legacy"]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", ["analyze", "info"])
def test_bad_bin_folders(tmp_path, capsys, model, case, command):
    d = tmp_path / "model"
    d.mkdir()
    for p in (model / "bin").iterdir():
        (d / p.name).write_bytes(p.read_bytes())
    marker = tmp_path / "marker"
    named, words = _bad(d, case, marker)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    before = _snapshot(d, out_dir)
    argv = [command, str(d)]
    argv += ["--out", str(out_dir / "o.csv")] if command == "analyze" else ["--json"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main(argv)
    out, err = capsys.readouterr()
    assert not caught, [str(w.message) for w in caught]
    assert rc == 2 and out == "" and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"masktopo: error: {named}: "), err
    assert words in lines[0]
    assert _snapshot(d, out_dir) == before  # nothing written, nothing changed
    assert not marker.exists()


def test_bad_bin_folder_subprocess(tmp_path, model):
    """The same as a real command: one line on stderr, exit status 2 (here: code in a shard)."""
    d = tmp_path / "model"
    d.mkdir()
    for p in (model / "bin").iterdir():
        (d / p.name).write_bytes(p.read_bytes())
    marker = tmp_path / "marker"
    named, words = _bad(d, "code", marker)
    proc = run_masktopo("analyze", d, "--out", tmp_path / "o.csv", cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"masktopo: error: {named}: ") and words in lines[0]
    assert not (tmp_path / "o.csv").exists() and not marker.exists()


def test_a_single_bin_state_dict_is_read_lazily_with_mask_nonzero(model, tmp_path, monkeypatch,
                                                                  capsys):  # fmt: skip
    """``analyze FILE.bin --mask nonzero`` reads a flat state dict tensor by tensor like a
    model folder (the same rows as the .safetensors file); a nested checkpoint, which the lazy
    reader refuses, is read whole as before."""
    from safetensors.torch import save_file

    import masktopo.inputs

    t = tiny_llama_tensors()
    torch.save(t, tmp_path / "one.bin")
    save_file(t, str(tmp_path / "one.safetensors"))
    args = ["--mask", "nonzero", "--format", "csv"]

    def whole(*a, **k):
        raise AssertionError("the whole file was loaded")

    with monkeypatch.context() as m:
        m.setattr(masktopo.inputs, "load", whole)
        capsys.readouterr()
        assert main(["analyze", str(tmp_path / "one.bin"), *args]) == 0
        a = capsys.readouterr().out
        assert main(["analyze", str(tmp_path / "one.safetensors"), *args]) == 0
        b = capsys.readouterr().out
    assert a == b and a.count("\n") == 16  # header, 14 layers, the network row
    torch.save({"model": {"fc.weight": torch.eye(4)}}, tmp_path / "nested.bin")
    assert main(["analyze", str(tmp_path / "nested.bin"), *args]) == 0
    assert "fc.weight" in capsys.readouterr().out
