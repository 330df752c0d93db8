"""Hugging Face model folders of PyTorch pickles (``pytorch_model.bin`` or shards with
``pytorch_model.bin.index.json``), read with ``torch.load(weights_only=True, mmap=True)`` one
tensor at a time: the same entries, values and rows as the same weights as safetensors,
safetensors preferred, bounded memory, and one-line errors naming the file for bad input."""

from __future__ import annotations

import json
import os
import struct
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch
from _llm_files import SHARD_1, SHARD_2, lazy_memory, llama_tensors

from masktopo import analysis, load
from masktopo.analysis.lazy import analyze_layers, refs_of_source
from masktopo.analysis.structure import prune_nm, prune_per_row
from masktopo.errors import MaskFileError, UnknownNameError
from masktopo.inputs import info
from masktopo.store.hf_folder import (
    BIN_FILE,
    BIN_INDEX_FILE,
    SINGLE_FILE,
    is_hf_folder,
    open_source,
    write_folder,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("llm_bin")
    tensors = llama_tensors()
    write_folder(base / "bin", tensors, shards=2, fmt="bin")
    write_folder(base / "bin1", tensors, fmt="bin")
    write_folder(base / "st", tensors, shards=2)
    return base, tensors


def _entry_facts(src) -> list[tuple]:
    """What the analysis sees of each tensor, whatever the file format (sorted by name: a
    safetensors file orders its tensors by dtype and size, a .bin file keeps the dict's order)."""
    return sorted((e.name, e.dtype, e.shape, e.nbytes, e.cls, e.transposed) for e in src.entries)


def test_layout_and_entries_equal_safetensors(folders):
    base, tensors = folders
    names = sorted(p.name for p in (base / "bin").iterdir())
    assert names == sorted([BIN_INDEX_FILE, SHARD_1, SHARD_2, "config.json"])
    assert is_hf_folder(base / "bin") and is_hf_folder(base / "bin1")
    src, ref = open_source(base / "bin"), open_source(base / "st")
    assert src.format == "torch" and ref.format == "safetensors"
    assert [p.name for p in src.files] == [SHARD_1, SHARD_2]
    assert {e.file.name for e in src.entries} == {SHARD_1, SHARD_2}  # both shards hold tensors
    assert all(e.fmt == "torch" and e.start == -1 for e in src.entries)
    assert _entry_facts(src) == _entry_facts(ref)
    assert [e.name for e in src.layers] == [e.name for e in ref.layers]
    assert len(src.layers) == 14 and src.nbytes == ref.nbytes
    assert {e.cls for e in src.entries} == {"linear", "embedding", "head", "norm"}
    assert _entry_facts(open_source(base / "bin1")) == _entry_facts(ref)
    with pytest.raises(UnknownNameError):
        write_folder(base / "never", tensors, fmt="gguf")
    assert not (base / "never").exists()


def test_values_equal_the_weights(folders):
    base, tensors = folders
    for folder in ("bin", "bin1"):
        src = open_source(base / folder, include=("embeddings", "head"))
        n = 0
        for name, mask, w in src.iter_layers():
            assert w.dtype == torch.bfloat16 and w.is_contiguous()
            assert torch.equal(w, tensors[name]) and torch.equal(mask, tensors[name] != 0)
            n += 1
        assert n == 16


@pytest.mark.parametrize("structure", [True, False])
def test_bin_shards_give_the_rows_of_safetensors(folders, structure):
    """Two bf16 .bin shards + index: the rows of the same weights as safetensors shards, and of
    one safetensors file read through the ordinary path (zeros as masks)."""
    base, _ = folders
    df = analyze_layers(refs_of_source(open_source(base / "bin", include=("embeddings", "head"))),
                        structure=structure)  # fmt: skip
    st = analyze_layers(refs_of_source(open_source(base / "st", include=("embeddings", "head"))),
                        structure=structure)  # fmt: skip
    pd.testing.assert_frame_equal(df, st, check_exact=True)
    assert len(df) == 16 and df["weighted_mu_hat"].notna().all()
    ms = load(base / "st", include=("embeddings", "head"))
    ref = analysis.analyze(ms).set_index("layer").loc[df["layer"]].reset_index()
    pd.testing.assert_frame_equal(df[ref.columns], ref, check_exact=True)
    if structure:
        nm = dict(zip(df["layer"], df["nm"], strict=True))
        assert nm["model.layers.0.mlp.gate_proj.weight"] == "2:4"


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_fp16_fp32(tmp_path, dtype):
    tensors = llama_tensors(dtype, seed=1, hidden=32, inter=64, blocks=1, vocab=40)
    write_folder(tmp_path / "b", tensors, shards=3, fmt="bin")
    write_folder(tmp_path / "s", tensors, shards=3)
    src = open_source(tmp_path / "b", layers=["*.mlp.*"])
    assert {e.dtype for e in src.layers} == {"F16" if dtype == torch.float16 else "F32"}
    for name, _, w in src.iter_layers():
        assert w.dtype == dtype and torch.equal(w, tensors[name])
    metrics = ["mu_hat", "weighted_mu_hat"]
    a = analyze_layers(refs_of_source(src), metrics=metrics)
    b = analyze_layers(refs_of_source(open_source(tmp_path / "s", layers=["*.mlp.*"])),
                       metrics=metrics)  # fmt: skip
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert list(a["nm"]) == ["2:4"] * 3


def test_layers_glob(folders):
    base, _ = folders
    for pats in (["model.layers.*.mlp.*"], ["*.1.self_attn.q_proj.*", "lm_head.*"]):
        src, ref = open_source(base / "bin", layers=pats), open_source(base / "st", layers=pats)
        assert [e.name for e in src.layers] == [e.name for e in ref.layers]
        assert src.layers
    with pytest.raises(MaskFileError, match="no weight matrices to analyze matching"):
        open_source(base / "bin", layers=["nothing.*"])


def test_load_and_info(folders):
    base, tensors = folders
    ms = load(base / "bin", layers=["model.layers.0.*"])
    assert ms.meta["source"]["format"] == "hf_folder"
    assert len(ms) == 7 and all(torch.equal(ms.weights[n], tensors[n]) for n in ms)
    d, ref = info(base / "bin"), info(base / "st")
    assert d["format"] == "hf_folder" and d["n_files"] == 2 and d["n_layers"] == 14
    assert d["layers"] == ref["layers"]  # both in the natural order of the names
    assert sorted(d["skipped"], key=str) == sorted(ref["skipped"], key=str)
    assert (d["nnz"], d["numel"], d["density"]) == (ref["nnz"], ref["numel"], ref["density"])
    up = next(x for x in d["layers"] if x["name"].endswith("1.mlp.up_proj.weight"))
    assert up["nm"] == "2:4" and up["dtype"] == "BF16"


def test_safetensors_preferred(tmp_path):
    """A folder with both formats is read from its safetensors (as transformers does): the .bin
    files, here other weights and one of them not even a checkpoint, are never opened."""
    a = llama_tensors(torch.float32, seed=1, hidden=16, inter=32, blocks=1, vocab=8)
    b = llama_tensors(torch.float32, seed=2, hidden=16, inter=32, blocks=1, vocab=8)
    d = write_folder(tmp_path / "both", b, shards=2, fmt="bin")
    write_folder(d, a)
    (d / SHARD_1).write_bytes(b"not a checkpoint")
    src = open_source(d)
    assert src.format == "safetensors" and [p.name for p in src.files] == [SINGLE_FILE]
    for name, _, w in src.iter_layers():
        assert torch.equal(w, a[name])
    (d / SINGLE_FILE).unlink()
    with pytest.raises(MaskFileError, match="not a zip archive"):
        open_source(d)  # now the .bin shards are read


def test_pytorch_model_bin_without_config(tmp_path):
    tensors = llama_tensors(torch.float32, hidden=16, inter=32, blocks=1, vocab=8)
    d = write_folder(tmp_path / "m", tensors, fmt="bin")
    (d / "config.json").unlink()
    assert is_hf_folder(d)
    src = open_source(d)
    assert src.config == {} and len(src.layers) == 7


def test_tied_and_strided_tensors(tmp_path):
    """Tensors that share a storage (a tied LM head) or are stored as strided views are read as
    their values: the storage check covers the whole shared record."""
    g = torch.Generator().manual_seed(5)
    emb = torch.randn(40, 16, generator=g)
    up = prune_per_row(torch.randn(16, 32, generator=g), 0.5)  # stored transposed: a view
    state = {"model.embed_tokens.weight": emb, "lm_head.weight": emb,
             "model.layers.0.mlp.up_proj.weight": up.T.contiguous().T,
             "model.layers.0.mlp.down_proj.weight": emb[:16, :8]}  # fmt: skip
    d = tmp_path / "tied"
    d.mkdir()
    torch.save(state, d / BIN_FILE)
    src = open_source(d, include=("embeddings", "head"))
    got = {name: w for name, _, w in src.iter_layers()}
    assert set(got) == set(state)
    for name, w in got.items():
        assert w.is_contiguous() and torch.equal(w, state[name])


def test_gpt2_conv1d(tmp_path):
    """transformers' Conv1D weights (``in × out``) of a GPT-2 .bin folder are read transposed."""
    g = torch.Generator().manual_seed(3)
    linear = {
        "transformer.h.0.attn.c_attn.weight": prune_nm(torch.randn(96, 32, generator=g), 2, 4),
        "transformer.h.0.mlp.c_fc.weight": prune_per_row(torch.randn(64, 32, generator=g), 0.5),
    }
    stored = {k: v.T.contiguous() for k, v in linear.items()}
    cfg = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}
    b = write_folder(tmp_path / "b", stored, config=cfg, fmt="bin")
    s = write_folder(tmp_path / "s", stored, config=cfg)
    src = open_source(b)
    assert all(e.transposed and e.layer_shape == e.shape[::-1] for e in src.layers)
    for name, mask, w in src.iter_layers():
        assert torch.equal(w, linear[name]) and torch.equal(mask, linear[name] != 0)
    assert info(b)["layers"] == info(s)["layers"]
    assert info(b)["layers"][0]["shape"] == [96, 32]


# -- bad input: one-line errors naming the file ------------------------------------------------


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def _error(path: Path, *, read: bool = False) -> str:
    """The one line of the MaskFileError that opening (and, with ``read``, reading every layer
    of) the folder ``path`` raises."""
    with pytest.raises(MaskFileError) as e:
        src = open_source(path, include=("embeddings", "head"))
        if read:
            for _ in src.iter_layers():
                pass
    text = str(e.value)
    assert "\n" not in text
    return text


def test_index_naming_a_missing_shard(folders, tmp_path):
    d = _copy(folders[0] / "bin", tmp_path / "m")
    (d / SHARD_2).unlink()
    assert _error(d).startswith(f"{d / SHARD_2}: is named in {BIN_INDEX_FILE} (tensor ")


def test_index_pointing_outside_the_folder(folders, tmp_path):
    d = _copy(folders[0] / "bin", tmp_path / "o")
    (tmp_path / "elsewhere.bin").write_bytes((d / SHARD_2).read_bytes())
    index = json.loads((d / BIN_INDEX_FILE).read_text())
    index["weight_map"] = {k: "../elsewhere.bin" if v == SHARD_2 else v
                           for k, v in index["weight_map"].items()}  # fmt: skip
    (d / BIN_INDEX_FILE).write_text(json.dumps(index))
    text = _error(d)
    assert text.startswith(f"{d / BIN_INDEX_FILE}: shard '../elsewhere.bin' (of tensor ")
    assert text.endswith("points outside the model folder")


def test_index_naming_a_tensor_its_shard_lacks(folders, tmp_path):
    d = _copy(folders[0] / "bin", tmp_path / "x")
    index = json.loads((d / BIN_INDEX_FILE).read_text())
    index["weight_map"]["model.layers.7.mlp.up_proj.weight"] = SHARD_1
    (d / BIN_INDEX_FILE).write_text(json.dumps(index))
    assert _error(d) == (f"{d / SHARD_1}: does not hold tensor 'model.layers.7.mlp.up_proj.weight',"
                         f" which {BIN_INDEX_FILE} places there")  # fmt: skip


@pytest.mark.parametrize("keep", [0, 5, 200, 0.5, -22])
def test_truncated_shard(folders, tmp_path, keep):
    d = _copy(folders[0] / "bin", tmp_path / "t")
    data = (d / SHARD_1).read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    (d / SHARD_1).write_bytes(data[:n])
    assert _error(d).startswith(f"{d / SHARD_1}: truncated or corrupt checkpoint (")


def _record(path: Path, name_end: str) -> tuple[int, int]:
    """Byte offset and size of the data of the zip record whose name ends with ``name_end``."""
    data = path.read_bytes()
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(name_end))
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


def test_flipped_byte_in_a_tensor(folders, tmp_path):
    """torch does not check the zip's CRC-32s: a flipped byte in a tensor's bytes is caught when
    the tensor is read (its storage's checksum), not analyzed as other weights."""
    d = _copy(folders[0] / "bin", tmp_path / "f")
    with zipfile.ZipFile(d / SHARD_2) as z:
        biggest = max(
            (i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size
        )
    start, size = _record(d / SHARD_2, biggest.filename)
    _flip(d / SHARD_2, start + size // 2)
    src = open_source(d)  # the pickle and the zip's directory are intact
    assert len(src.layers) == 14
    text = _error(d, read=True)
    assert text.startswith(f"{d / SHARD_2}: truncated or corrupt checkpoint (the bytes of tensor ")
    assert "do not match the CRC-32 checksum" in text


def test_flipped_byte_in_the_pickle(folders, tmp_path):
    d = _copy(folders[0] / "bin", tmp_path / "p")
    start, size = _record(d / SHARD_1, "/data.pkl")
    _flip(d / SHARD_1, start + size // 2)
    text = _error(d)
    assert text.startswith(f"{d / SHARD_1}: truncated or corrupt checkpoint (")
    assert "CRC" in text


class _Payload:
    """Unpickling runs ``func(*args)``: code, which weights_only must refuse."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


@pytest.mark.parametrize("kind", ["exec", "os_system"])
def test_pickle_with_code_is_refused(tmp_path, kind):
    marker = tmp_path / "marker"
    write = f"open({str(marker)!r}, 'w').write('code ran')"
    payload = (_Payload(exec, write) if kind == "exec"
               else _Payload(os.system, f'{sys.executable} -c "{write}"'))  # fmt: skip
    d = tmp_path / "evil"
    d.mkdir()
    torch.save({"model.layers.0.mlp.up_proj.weight": torch.ones(4, 4), "x": payload}, d / BIN_FILE)
    torch.load(d / BIN_FILE, weights_only=False)  # the payload is live: an unsafe load runs it
    assert marker.read_text() == "code ran"
    marker.unlink()
    text = _error(d)
    assert text.startswith(f"{d / BIN_FILE}: refusing to unpickle: the checkpoint contains Python")
    assert ("exec" if kind == "exec" else "system") in text
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ([torch.ones(2, 2)], "holds a list, not a state dict"),
        (torch.ones(2, 2), "holds a Tensor, not a state dict"),
        ({"model": {"fc.weight": torch.ones(2, 2)}}, "holds a dict under 'model': not a state"),
        ({"fc.weight": torch.ones(2, 2), "step": 3}, "holds a int under 'step': not a state"),
        ({0: torch.ones(2, 2)}, "holds the key 0 (int): not a state dict"),
    ],
)
def test_not_a_dict_of_tensors(tmp_path, content, words):
    d = tmp_path / "odd"
    d.mkdir()
    torch.save(content, d / BIN_FILE)
    text = _error(d)
    assert text.startswith(f"{d / BIN_FILE}: {words}"), text


def test_legacy_file_is_refused(tmp_path):
    """A legacy (non-zip) torch.save file cannot be memory-mapped: a one-line error saying so,
    rather than a load of the whole file."""
    d = tmp_path / "legacy"
    d.mkdir()
    state = llama_tensors(torch.float32, hidden=16, inter=32, blocks=1, vocab=8)
    torch.save(state, d / BIN_FILE, _use_new_zipfile_serialization=False)
    text = _error(d)
    assert text.startswith(f"{d / BIN_FILE}: is a legacy (non-zip, PyTorch < 1.6) torch.save file")
    assert "cannot be memory-mapped" in text


def test_not_a_checkpoint(tmp_path):
    d = tmp_path / "junk"
    d.mkdir()
    (d / BIN_FILE).write_bytes(b"")
    assert _error(d) == (f"{d / BIN_FILE}: truncated or corrupt checkpoint (not a zip archive, "
                         "the format of torch.save)")  # fmt: skip


def test_changed_since_opened(folders, tmp_path):
    d = _copy(folders[0] / "bin", tmp_path / "c")
    src = open_source(d)
    other = llama_tensors(torch.float32)  # same names, another dtype
    torch.save({k: v for k, v in other.items() if k in {e.name for e in src.entries
                                                       if e.file.name == SHARD_1}}, d / SHARD_1)  # fmt: skip
    with pytest.raises(MaskFileError, match="changed since it was opened") as e:
        for _ in src.iter_layers():
            pass
    assert str(e.value).startswith(f"{d / SHARD_1}: tensor ")


def test_nan_weights(tmp_path):
    tensors = llama_tensors(torch.float32, hidden=16, inter=32, blocks=1, vocab=8)
    tensors["model.layers.0.mlp.up_proj.weight"][3, 5] = float("inf")
    d = write_folder(tmp_path / "n", tensors, fmt="bin")
    text = _error(d, read=True)
    assert text == (f"{d / BIN_FILE}: tensor 'model.layers.0.mlp.up_proj.weight' has NaN or "
                    "infinite weights")  # fmt: skip


# -- bounded memory ----------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_bounded_memory(tmp_path):
    """Two .bin shards of 96 MiB each (192 MiB of float32 weights) are analyzed with a peak RSS
    growth far below the size of one shard: every tensor is copied out of a fresh map of its
    file, which is dropped (a map kept over a shard would hold up to 96 MiB of its pages)."""
    r = lazy_memory(tmp_path / "big", shards=2, fmt="bin")
    assert r["format"] == "torch"
    assert r["rows"] == 48 and r["density"] == pytest.approx(0.3, abs=1e-3)
    assert r["bytes"] == 48 * 4 * 2**20
    budget = 64 * 2**20  # a third of the folder, two thirds of a shard
    assert r["peak"] - r["base"] < budget, r
    if r["peak"] < r["base"]:  # pragma: no cover - clear_refs not honoured
        pytest.skip("the kernel did not reset VmHWM")
