"""Tests of masktopo.store: mask files, foreign checkpoints, atomic writes (run directories:
tests/runs/)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.utils.prune as prune
from _files import make_maskset
from safetensors import safe_open
from safetensors.torch import save_file

import masktopo
from masktopo import store
from masktopo.errors import MaskFileError, MaskTopoError, MaskValidationError, UnknownNameError
from masktopo.masks import MaskSet

REPO_ROOT = Path(masktopo.__file__).resolve().parents[1]
FORMATS = ("safetensors", "npz", "pt")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def data_range(path: Path, key: str) -> tuple[int, int]:
    """Byte range of tensor ``key`` in a safetensors file."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    start, end = json.loads(raw[8 : 8 + n])[key]["data_offsets"]
    return 8 + n + start, 8 + n + end


def rewrite_safetensors(path: Path, edit_tensors=None, edit_meta=None) -> None:
    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if edit_tensors:
        edit_tensors(tensors)
    if edit_meta:
        edit_meta(metadata)
    save_file(tensors, str(path), metadata=metadata)


def _touch(path: str) -> int:
    """Runs only if a checkpoint is unpickled unsafely: leaves a marker file."""
    Path(path).write_text("code ran")
    return 0


class Payload:
    """Unpickling this object calls _touch (an arbitrary-code stand-in)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (_touch, (self.path,))


def only_file(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ---------------------------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("with_weights", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_round_trip(tmp_path, fmt, with_weights, dtype):
    ms = make_maskset(weights=with_weights, dtype=dtype, meta={"method": "test", "n": 3})
    path = store.save(tmp_path / f"m.{fmt}", ms)
    assert path == tmp_path / f"m.{fmt}"
    back = masktopo.load(path)
    assert back == ms  # names in order, kinds, masks, weights with their dtype
    assert back.names == ms.names
    assert back.has_weights == with_weights
    if with_weights:
        assert all(back.weights[n].dtype == dtype for n in back)
    if fmt != "pt":  # a prune-style state dict has no place for free-form metadata
        assert back.meta == ms.meta
    only = masktopo.load(path, weights=False)
    assert not only.has_weights and only.equal(ms, weights=False)
    assert only_file(tmp_path) == [f"m.{fmt}"]  # no temp files left


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_edge_masks(tmp_path, fmt):
    """All-zero, all-one and numel multiple of 8 (no padding) layers survive a round trip."""
    ms = MaskSet(
        {
            "zero.weight": torch.zeros(3, 5, dtype=torch.bool),
            "one.weight": torch.ones(4, 2, 1, 1, dtype=torch.bool),
            "eight.weight": torch.tensor([[1, 0, 1, 1], [0, 0, 1, 0]], dtype=torch.bool),
            "big.weight": torch.rand(64, 33, generator=torch.Generator().manual_seed(1)) < 0.02,
        }
    )
    back = masktopo.load(store.save(tmp_path / f"e.{fmt}", ms))
    assert back == ms
    assert back.nnz_per_layer() == ms.nnz_per_layer()


def test_non_contiguous_and_tied_weights_are_saved(tmp_path):
    w = torch.randn(6, 4)
    ms = MaskSet(
        {
            "a.weight": torch.ones(4, 6, dtype=torch.bool),
            "b.weight": torch.ones(4, 6, dtype=torch.bool),
        },
        weights={"a.weight": w.t(), "b.weight": w.t()},  # a transposed view, shared by two layers
    )
    for fmt in FORMATS:
        assert masktopo.load(store.save(tmp_path / f"t.{fmt}", ms)) == ms


def test_safetensors_layout(tmp_path):
    ms = make_maskset(meta={"origin": "unit test"})
    path = store.save(tmp_path / "m.safetensors", ms)
    with safe_open(str(path), framework="pt") as f:
        md = f.metadata()
        keys = set(f.keys())
        packed = {n: f.get_tensor(f"mask/{n}") for n in ms}
    assert md["format"] == "masktopo.masks" and md["format_version"] == "1"
    assert md["has_weights"] == "true" and md["masktopo_version"] == masktopo.__version__
    assert json.loads(md["meta"]) == {"origin": "unit test"}
    layers = json.loads(md["layers"])
    assert [d["name"] for d in layers] == ms.names
    for d in layers:
        name = d["name"]
        assert d["kind"] == ms.kind(name) and tuple(d["shape"]) == ms.shape(name)
        assert d["nnz"] == ms.nnz(name)
        p = packed[name]
        assert p.dtype == torch.uint8 and p.numel() == (ms.numel(name) + 7) // 8
        expected = np.packbits(ms[name].numpy().reshape(-1), bitorder="big")
        assert np.array_equal(p.numpy(), expected)
    assert keys == {f"mask/{n}" for n in ms} | {f"weight/{n}" for n in ms}


def test_npz_layout(tmp_path):
    ms = make_maskset(dtype=torch.bfloat16, meta={"k": [1, 2]})
    path = store.save(tmp_path / "m.npz", ms)
    with np.load(path, allow_pickle=False) as z:
        header = json.loads(z["__masktopo__"].item())
        for n in ms:
            assert z[f"mask/{n}"].dtype == np.bool_
            assert np.array_equal(z[f"mask/{n}"], ms[n].numpy())
            assert z[f"weight/{n}"].dtype == np.float32  # numpy has no bfloat16
    assert header["format"] == "masktopo.masks" and header["meta"] == {"k": [1, 2]}
    assert [d["dtype"] for d in header["layers"]] == ["bfloat16"] * len(ms)


def test_pt_is_a_prune_style_state_dict(tmp_path):
    ms = make_maskset(dtype=torch.float16)
    path = store.save(tmp_path / "m.pt", ms)
    state = torch.load(path, weights_only=True)
    assert list(state) == [k for n in ms for k in (f"{n}_mask", f"{n}_orig")]
    for n in ms:
        assert state[f"{n}_mask"].dtype == torch.float16
        assert torch.equal(state[f"{n}_mask"].bool(), ms[n])
        assert torch.equal(state[f"{n}_orig"], ms.weights[n])


def test_info(tmp_path):
    ms = make_maskset(meta={"x": 1})
    for fmt in FORMATS:
        d = masktopo.info(store.save(tmp_path / f"m.{fmt}", ms))
        assert d["format"] == {"pt": "torch"}.get(fmt, fmt)
        assert d["n_layers"] == len(ms) and d["has_weights"] is True
        assert d["nnz"] == ms.nnz() and d["numel"] == ms.numel()
        assert d["density"] == pytest.approx(ms.density())
        assert [x["name"] for x in d["layers"]] == ms.names
        for x in d["layers"]:
            assert x["shape"] == list(ms.shape(x["name"])) and x["kind"] == ms.kind(x["name"])
            assert x["nnz"] == ms.nnz(x["name"]) and x["numel"] == ms.numel(x["name"])
            assert x["density"] == pytest.approx(ms.density(x["name"]))
        json.dumps(d)  # JSON-ready
    assert masktopo.info(tmp_path / "m.safetensors")["meta"] == {"x": 1}
    assert (
        masktopo.info(store.save(tmp_path / "n.npz", ms.without_weights()))["has_weights"] is False
    )


# ---------------------------------------------------------------------------------------------
# save: arguments and atomicity
# ---------------------------------------------------------------------------------------------
def test_save_format_selection(tmp_path):
    ms = make_maskset()
    assert masktopo.load(store.save(tmp_path / "m.bin", ms, format="pt")) == ms
    assert masktopo.load(store.save(tmp_path / "m.ckpt", ms, format="pt")) == ms
    with pytest.raises(MaskFileError, match=r"m\.h5.*suffix '\.h5'.*\.safetensors"):
        store.save(tmp_path / "m.h5", ms)
    with pytest.raises(MaskFileError, match=r"needs one of the suffixes \.npz"):
        store.save(tmp_path / "m.safetensors", ms, format="npz")
    with pytest.raises(UnknownNameError, match="known: npz, pt, safetensors"):
        store.save(tmp_path / "m.safetensors", ms, format="hdf5")
    assert only_file(tmp_path) == ["m.bin", "m.ckpt"]


def test_save_rejects_bad_masksets(tmp_path):
    with pytest.raises(MaskValidationError, match="no layers"):
        store.save(tmp_path / "m.safetensors", MaskSet({}))
    with pytest.raises(MaskValidationError, match="needs a MaskSet"):
        store.save(tmp_path / "m.safetensors", {"a": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(MaskValidationError, match="JSON"):
        store.save(tmp_path / "m.safetensors", make_maskset(meta={"f": object()}))
    with pytest.raises(MaskFileError, match="does not exist"):
        store.save(tmp_path / "missing" / "m.safetensors", make_maskset())
    with pytest.raises(MaskValidationError, match=r"path is a MaskSet.*save\(path, maskset\)"):
        store.save(make_maskset(), tmp_path / "m.safetensors")
    with pytest.raises(MaskValidationError, match="path is a NoneType, not a str"):
        store.save(None, make_maskset())
    assert only_file(tmp_path) == []


def test_one_layer_pattern_given_as_a_string_is_one_pattern(tmp_path):
    # "fc1*" was read as the patterns "f", "c", "1", "*": every layer matched
    ms = MaskSet({n: torch.ones(2, 2, dtype=torch.bool) for n in ("fc1.weight", "fc2.weight")})
    path = store.save(tmp_path / "m.safetensors", ms)
    assert masktopo.load(path, layers="fc1*").names == ["fc1.weight"]
    assert [r["name"] for r in masktopo.info(path, layers="fc2*")["layers"]] == ["fc2.weight"]
    assert masktopo.load(path, layers=["fc1*", "fc2*"]).names == ms.names


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_atomic_write_failure_keeps_old_file(tmp_path, monkeypatch, fmt, failing):
    path = store.save(tmp_path / f"m.{fmt}", make_maskset(seed=1))
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(MaskFileError, match="No space left on device") as err:
        store.save(path, make_maskset(seed=2))
    assert str(path) in str(err.value)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert only_file(tmp_path) == [path.name]
    assert masktopo.load(path) == make_maskset(seed=1)


def test_atomic_write_failure_inside_the_writer(tmp_path, monkeypatch):
    """An exception while the bytes are being written (half a file) leaves nothing behind."""
    path = store.save(tmp_path / "m.npz", make_maskset(seed=1))
    before = path.read_bytes()

    def half_then_fail(f, **arrays):
        f.write(b"PK\x03\x04 half an archive")
        raise RuntimeError("interrupted")

    monkeypatch.setattr(np, "savez_compressed", half_then_fail)
    with pytest.raises(RuntimeError, match="interrupted"):
        store.save(path, make_maskset(seed=2))
    with pytest.raises(RuntimeError, match="interrupted"):
        store.save(tmp_path / "new.npz", make_maskset(seed=2))
    assert path.read_bytes() == before
    assert only_file(tmp_path) == ["m.npz"]


def test_save_replaces_existing_file(tmp_path):
    path = store.save(tmp_path / "m.safetensors", make_maskset(seed=1))
    store.save(path, make_maskset(seed=2, weights=False))
    assert masktopo.load(path) == make_maskset(seed=2, weights=False)
    assert only_file(tmp_path) == ["m.safetensors"]


# ---------------------------------------------------------------------------------------------
# load: paths and dispatch
# ---------------------------------------------------------------------------------------------
def test_missing_and_unsupported_paths(tmp_path):
    with pytest.raises(MaskFileError, match=r"nope\.pt: no such file or directory"):
        masktopo.load(tmp_path / "nope.pt")
    (tmp_path / "m.h5").write_bytes(b"\x89HDF")
    with pytest.raises(MaskFileError, match=r"m\.h5: unsupported file type.*\.safetensors.*\.ckpt"):
        masktopo.load(tmp_path / "m.h5")
    with pytest.raises(MaskFileError, match="no such file"):
        masktopo.info(tmp_path / "nope.safetensors")
    with pytest.raises(MaskFileError, match=r"not a run directory \(no run\.json\)"):
        masktopo.load(tmp_path)
    with pytest.raises(MaskValidationError, match="path"):
        masktopo.load(3)


def test_event_argument_for_a_file(tmp_path):
    path = store.save(tmp_path / "m.safetensors", make_maskset())
    with pytest.raises(MaskFileError, match="run directory"):
        masktopo.load(path, event=0)
    with pytest.raises(MaskValidationError, match="integer"):
        masktopo.load(path, event="last")


def test_empty_files_are_errors(tmp_path):
    torch.save({}, tmp_path / "empty.pt")
    with pytest.raises(MaskFileError, match=r"empty\.pt: no state dict found"):
        masktopo.load(tmp_path / "empty.pt")
    torch.save({"step": torch.tensor(3)}, tmp_path / "scalar.pt")
    with pytest.raises(MaskFileError, match="no masks found"):
        masktopo.load(tmp_path / "scalar.pt")
    np.savez(tmp_path / "empty.npz")
    with pytest.raises(MaskFileError, match=r"empty\.npz: the file holds no tensors"):
        masktopo.load(tmp_path / "empty.npz")
    path = store.save(tmp_path / "m.safetensors", make_maskset(weights=False))
    rewrite_safetensors(path, edit_tensors=dict.clear, edit_meta=lambda m: m.update(layers="[]"))
    with pytest.raises(MaskFileError, match="holds no layers"):
        masktopo.load(path)


# ---------------------------------------------------------------------------------------------
# corrupt canonical files
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("size", ["small", "large"])
def test_truncated_files(tmp_path, fmt, size):
    ms = make_maskset()
    if size == "large":  # over 4 KiB: a .pt cut past its first 4 KiB once read "cannot read"
        from masktopo import examples

        ms = examples.random_maskset({"a": (40, 60), "b": (30, 50)}, 0.3, weights=True, seed=0)
    path = store.save(tmp_path / f"m.{fmt}", ms)
    data = path.read_bytes()
    # every 1/24 of the file and each of its last 64 bytes (a cut in a zip's directory made
    # torch and numpy seek before the start: EINVAL, once reported as "cannot read")
    cuts = {0, 1, 8, 40, *range(0, len(data), max(1, len(data) // 24)),
            *range(max(0, len(data) - 64), len(data))}  # fmt: skip
    for cut in sorted(cuts):
        cut_path = tmp_path / f"cut{cut}.{fmt}"
        cut_path.write_bytes(data[:cut])
        with pytest.raises(MaskFileError, match="truncated or corrupt") as err:
            masktopo.load(cut_path)
        assert str(err.value).startswith(str(cut_path) + ": ")
        assert "\n" not in str(err.value)


def test_truncated_legacy_torch_checkpoint(tmp_path):
    path = tmp_path / "legacy.pt"
    state = {"fc.weight_mask": torch.ones(4, 8), "fc.weight_orig": torch.randn(4, 8)}
    torch.save(state, path, _use_new_zipfile_serialization=False)
    assert masktopo.load(path).nnz() == 32
    data = path.read_bytes()
    for cut in (1, len(data) // 3, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(MaskFileError, match="truncated or corrupt checkpoint"):
            masktopo.load(path)


def test_flipped_bit_in_packed_mask_is_detected(tmp_path):
    ms = make_maskset(weights=False)
    path = store.save(tmp_path / "m.safetensors", ms)
    start, _ = data_range(path, "mask/a.conv.weight")
    raw = bytearray(path.read_bytes())
    raw[start] ^= 0x80  # the first entry of the layer
    path.write_bytes(bytes(raw))
    with pytest.raises(MaskFileError, match=r"layer 'a.conv.weight'.*set bits.*nnz.*corrupt"):
        masktopo.load(path)


@pytest.mark.parametrize("key", [b"crc32", b"weight_crc32", b"nnz"])
def test_a_flipped_bit_in_a_layer_key_is_an_error(tmp_path, key):
    """One flipped bit in a key of the header's ``layers`` ("crc32" -> "csc32") used to read
    the file as an old one without checksums, silently turning the check off."""
    path = store.save(tmp_path / "m.safetensors", make_maskset(weights=True))
    raw = bytearray(path.read_bytes())
    i = raw.find(b'\\"' + key + b'\\"')  # the layers list is JSON inside the JSON header
    assert i > 0
    raw[i + 3] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(MaskFileError, match=r"unknown entry '.*' in 'layers'|nnz None"):
        masktopo.load(path)


def test_nonzero_padding_bits_are_detected(tmp_path):
    ms = make_maskset(weights=False)
    path = store.save(tmp_path / "m.safetensors", ms)
    _, end = data_range(path, "mask/z.fc.weight")  # 35 entries: 5 padding bits
    raw = bytearray(path.read_bytes())
    raw[end - 1] |= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(MaskFileError, match=r"layer 'z.fc.weight': padding bits"):
        masktopo.load(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(layers="[{not json"), "metadata 'layers' is not valid JSON"),
        (lambda m: m.update(meta="{"), "metadata 'meta' is not valid JSON"),
        (lambda m: m.update(meta="[1]"), "'meta' is not a JSON object"),
        (lambda m: m.pop("layers"), "metadata has no 'layers' entry"),
        (lambda m: m.update(format_version="3"), "format_version '3' is not supported"),
        (lambda m: m.update(has_weights="yes"), "'has_weights' is 'yes'"),
        (lambda m: m.update(has_weights="false"), "tensor 'weight/.*' is not described"),
        (
            lambda m: m.update(layers=m["layers"].replace('"linear"', '"conv"')),
            "kind 'conv' does not fit",
        ),
        (
            lambda m: m.update(layers=m["layers"].replace("[5, 7]", "[5, 9]")),
            "packed mask is torch.uint8 of shape",
        ),
        (
            lambda m: m.update(layers=m["layers"].replace('"z.fc.weight"', '"bad name"')),
            "whitespace",
        ),
    ],
)
def test_bad_metadata(tmp_path, edit, message):
    path = store.save(tmp_path / "m.safetensors", make_maskset())
    rewrite_safetensors(path, edit_meta=edit)
    with pytest.raises(MaskFileError, match=message) as err:
        masktopo.load(path)
    assert str(err.value).startswith(str(path))


def test_bad_nnz_in_metadata(tmp_path):
    ms = make_maskset()
    path = store.save(tmp_path / "m.safetensors", ms)

    def edit(m):
        layers = json.loads(m["layers"])
        layers[1]["nnz"] += 1
        m["layers"] = json.dumps(layers)

    rewrite_safetensors(path, edit_meta=edit)
    with pytest.raises(MaskFileError, match=r"a\.conv\.weight.*nnz"):
        masktopo.load(path)


def test_missing_and_extra_tensors(tmp_path):
    path = store.save(tmp_path / "m.safetensors", make_maskset())
    rewrite_safetensors(path, edit_tensors=lambda t: t.pop("weight/a.conv.weight"))
    with pytest.raises(MaskFileError, match=r"tensor 'weight/a\.conv\.weight' is missing"):
        masktopo.load(path)
    path = store.save(tmp_path / "m.safetensors", make_maskset())
    rewrite_safetensors(path, edit_tensors=lambda t: t.update(extra=torch.zeros(2)))
    with pytest.raises(MaskFileError, match="tensor 'extra' is not described"):
        masktopo.load(path)


def test_weight_shape_mismatch_in_safetensors(tmp_path):
    path = store.save(tmp_path / "m.safetensors", make_maskset())
    rewrite_safetensors(
        path, edit_tensors=lambda t: t.update({"weight/z.fc.weight": torch.ones(7, 5)})
    )
    with pytest.raises(MaskFileError, match=r"'z.fc.weight': weight shape \(7, 5\) does not match"):
        masktopo.load(path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_in_safetensors(tmp_path, bad):
    path = store.save(tmp_path / "m.safetensors", make_maskset())

    def edit(t):
        t["weight/a.conv.weight"] = t["weight/a.conv.weight"].clone()
        t["weight/a.conv.weight"][1, 0, 2, 2] = bad

    rewrite_safetensors(path, edit_tensors=edit)
    kind = "NaN" if bad != bad else "inf"
    with pytest.raises(MaskFileError, match=rf"m\.safetensors: layer 'a.conv.weight'.*{kind}"):
        masktopo.load(path)
    # weights=False neither reads nor checks the weights
    assert masktopo.load(path, weights=False).equal(make_maskset(), weights=False)


def test_corrupt_npz(tmp_path):
    ms = make_maskset()
    path = store.save(tmp_path / "m.npz", ms)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["mask/a.conv.weight"] = arrays["mask/a.conv.weight"].copy()
    arrays["mask/a.conv.weight"].flat[0] ^= True
    np.savez_compressed(tmp_path / "flip.npz", **arrays)
    with pytest.raises(MaskFileError, match=r"flip\.npz: layer 'a.conv.weight'.*nnz"):
        masktopo.load(tmp_path / "flip.npz")
    arrays["mask/a.conv.weight"] = arrays["mask/a.conv.weight"].astype(np.uint8)
    np.savez_compressed(tmp_path / "dtype.npz", **arrays)
    with pytest.raises(MaskFileError, match="mask is uint8"):
        masktopo.load(tmp_path / "dtype.npz")
    # a byte flipped inside the compressed data is caught by zip's CRC or by zlib
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("mask/a.conv.weight.npy")
    raw[info.header_offset + 30 + len(info.filename) + info.compress_size // 2] ^= 0xFF
    (tmp_path / "crc.npz").write_bytes(bytes(raw))
    with pytest.raises(MaskFileError, match="truncated or corrupt"):
        masktopo.load(tmp_path / "crc.npz")


def test_npz_object_array_is_not_unpickled(tmp_path):
    marker = tmp_path / "marker"
    arr = np.empty(1, dtype=object)
    arr[0] = Payload(str(marker))
    np.savez(tmp_path / "obj.npz", **{"mask/fc.weight": np.ones((2, 2), bool), "x": arr})
    with pytest.raises(MaskFileError, match="refusing to unpickle: array 'x'"):
        masktopo.load(tmp_path / "obj.npz")
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# foreign checkpoints
# ---------------------------------------------------------------------------------------------
def pruned_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 5, 3),
        torch.nn.Flatten(),
        torch.nn.Linear(5 * 2 * 2, 3),
    )
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    prune.random_unstructured(model[2], "weight", amount=0.7)
    prune.l1_unstructured(model[4], "weight", amount=0.3)
    prune.l1_unstructured(model[4], "bias", amount=0.5)  # a 1-D mask: not a graph, skipped
    return model


def test_pruned_model_checkpoint_loads_without_the_model(tmp_path):
    model = pruned_model()
    ckpt = tmp_path / "pruned.pt"
    torch.save(model.state_dict(), ckpt)
    out = tmp_path / "loaded.pt"
    code = textwrap.dedent(
        """
        import sys, torch, masktopo
        ms = masktopo.load(sys.argv[1])
        torch.save({"names": ms.names, "kinds": [ms.kind(n) for n in ms],
                    "masks": dict(ms), "weights": ms.weights, "meta": str(ms.meta)}, sys.argv[2])
        """
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", code, str(ckpt), str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    got = torch.load(out, weights_only=True)
    assert got["names"] == ["0.weight", "2.weight", "4.weight"]
    assert got["kinds"] == ["conv", "conv", "linear"]
    for name, module in (("0.weight", model[0]), ("2.weight", model[2]), ("4.weight", model[4])):
        assert torch.equal(got["masks"][name], module.weight_mask.bool())
        assert torch.equal(got["weights"][name], module.weight_orig.detach())
    assert got["masks"]["2.weight"].sum() == round(0.3 * model[2].weight.numel())
    assert "'layout': 'prune'" in got["meta"]


def test_whole_model_pickle_is_refused(tmp_path):
    torch.save(pruned_model(), tmp_path / "model.pt")  # the module object, not its state dict
    with pytest.raises(MaskFileError, match=r"model\.pt: refusing to unpickle.*Sequential"):
        masktopo.load(tmp_path / "model.pt")


def test_checkpoint_with_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"fc.weight_mask": torch.ones(2, 3), "payload": Payload(str(marker))}, ckpt)
    # The payload is live: an unsafe load runs it.
    torch.load(shutil.copy(ckpt, tmp_path / "copy.ckpt"), weights_only=False)
    assert marker.read_text() == "code ran"
    marker.unlink()
    with pytest.raises(MaskFileError) as err:
        masktopo.load(ckpt)
    message = str(err.value)
    assert message.startswith(
        f"{ckpt}: refusing to unpickle: the checkpoint contains Python objects"
    )
    assert "_touch" in message and "\n" not in message
    with pytest.raises(MaskFileError, match="refusing to unpickle"):
        masktopo.info(ckpt)
    assert not marker.exists()


@pytest.mark.parametrize(
    "nesting", [[], ["state_dict"], ["model"], ["checkpoint", "net"], ["net", "model_state_dict"]]
)
def test_state_dict_nesting(tmp_path, nesting):
    model = pruned_model(seed=3)
    obj = model.state_dict()
    for key in reversed(nesting):
        obj = {key: obj, "epoch": 7, "best_acc": torch.tensor(0.5), "optimizer": {"lr": 0.1}}
    torch.save(obj, tmp_path / "c.pth")
    if nesting and nesting[0] not in store.STATE_DICT_KEYS:
        with pytest.raises(MaskFileError, match=r"no masks found|no state dict found"):
            masktopo.load(tmp_path / "c.pth")
        return
    ms = masktopo.load(tmp_path / "c.pth")
    assert ms.names == ["0.weight", "2.weight", "4.weight"]
    assert torch.equal(ms["2.weight"], model[2].weight_mask.bool())


def test_ddp_prefix_is_stripped(tmp_path):
    model = pruned_model(seed=4)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "ddp.pt")
    ms = masktopo.load(tmp_path / "ddp.pt")
    assert ms.names == ["0.weight", "2.weight", "4.weight"]
    assert ms.meta["source"]["stripped_prefix"] == "module."
    # a prefix shared by only some names is a real module name and is kept
    state = {
        "module.fc.weight": torch.ones(2, 2, dtype=torch.bool),
        "head.weight": torch.ones(3, 2, dtype=torch.bool),
    }
    torch.save(state, tmp_path / "mixed.pt")
    assert masktopo.load(tmp_path / "mixed.pt").names == ["module.fc.weight", "head.weight"]


def test_bool_and_binary_mappings(tmp_path):
    ms = make_maskset(weights=False)
    torch.save({n: m for n, m in ms.items()}, tmp_path / "bool.pt")
    assert masktopo.load(tmp_path / "bool.pt") == ms
    torch.save({"masks_of": {}, **{n: m.float() for n, m in ms.items()}}, tmp_path / "float01.pt")
    assert masktopo.load(tmp_path / "float01.pt") == ms
    np.savez(tmp_path / "plain.npz", **{n: m.numpy().astype(np.uint8) for n, m in ms.items()})
    assert masktopo.load(tmp_path / "plain.npz") == ms
    assert masktopo.load(tmp_path / "plain.npz").meta["source"]["layout"] == "binary"


def test_foreign_npz_layouts(tmp_path):
    ms = make_maskset(dtype=torch.float64)
    np.savez(
        tmp_path / "prefixed.npz",
        **{f"mask/{n}": m.numpy().astype(np.float32) for n, m in ms.items()},
        **{f"weight/{n}": w.numpy() for n, w in ms.weights.items()},
    )
    assert masktopo.load(tmp_path / "prefixed.npz") == ms
    np.savez(
        tmp_path / "prune.npz",
        **{f"{n}_mask": m.numpy() for n, m in ms.items()},
        **{f"{n}_orig": w.numpy() for n, w in ms.weights.items()},
        **{"fc.bias": np.zeros(3)},
    )
    assert masktopo.load(tmp_path / "prune.npz") == ms
    np.savez(tmp_path / "weights.npz", **{n: w.numpy() for n, w in ms.weights.items()})
    with pytest.raises(MaskFileError, match=r"no masks found.*zeros_as_mask=True.*--zeros-as-mask"):
        masktopo.load(tmp_path / "weights.npz")
    got = masktopo.load(tmp_path / "weights.npz", zeros_as_mask=True)
    # zeros_as_mask takes only 2-D and 4-D weights: the 5-D conv3d layer is not among them
    assert got == ms.select(["z.fc.weight", "a.conv.weight"])


def test_zeros_as_mask_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.Flatten(), torch.nn.Linear(3, 4))
    with torch.no_grad():
        model[0].weight[model[0].weight.abs() < 0.1] = 0
        model[2].weight[0] = 0
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "dense.pt")
    with pytest.raises(MaskFileError) as err:
        masktopo.load(tmp_path / "dense.pt")
    assert "no masks found" in str(err.value) and "zeros_as_mask=True" in str(err.value)
    ms = masktopo.load(tmp_path / "dense.pt", zeros_as_mask=True)
    assert ms.names == ["0.weight", "2.weight"]  # biases are not layers
    for name, w in (("0.weight", model[0].weight), ("2.weight", model[2].weight)):
        assert torch.equal(ms[name], w != 0)
        assert torch.equal(ms.weights[name], w.detach())
    assert ms.nnz("2.weight") == 9
    assert ms.meta["source"]["layout"] == "zeros_as_mask"
    assert not masktopo.load(tmp_path / "dense.pt", zeros_as_mask=True, weights=False).has_weights
    torch.save({"bias": torch.randn(3), "emb": torch.randn(3, 3)}, tmp_path / "nothing.pt")
    with pytest.raises(MaskFileError, match=r"no 2-D or 4-D floating-point '\*\.weight' tensors"):
        masktopo.load(tmp_path / "nothing.pt", zeros_as_mask=True)


def test_foreign_safetensors(tmp_path):
    """A safetensors file not written by masktopo (e.g. Hugging Face) is read as a state dict."""
    model = pruned_model(seed=5)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp_path / "hf.safetensors"), metadata={"format": "pt"})
    ms = masktopo.load(tmp_path / "hf.safetensors")
    assert ms.names == ["0.weight", "2.weight", "4.weight"]
    assert torch.equal(ms.weights["4.weight"], model[4].weight_orig.detach())
    assert masktopo.info(tmp_path / "hf.safetensors")["format"] == "safetensors"


@pytest.mark.parametrize("bad", [0.5, 2.0, -1.0, float("nan")])
def test_non_binary_mask_values(tmp_path, bad):
    mask = torch.ones(3, 4)
    mask[1, 2] = bad
    torch.save({"fc.weight_mask": mask, "fc.weight_orig": torch.randn(3, 4)}, tmp_path / "p.pt")
    with pytest.raises(MaskFileError, match=r"p\.pt: layer 'fc.weight': mask has") as err:
        masktopo.load(tmp_path / "p.pt")
    assert "\n" not in str(err.value)
    np.savez(tmp_path / "p.npz", **{"mask/fc.weight": mask.numpy()})
    with pytest.raises(MaskFileError, match=r"p\.npz: layer 'fc.weight': mask has"):
        masktopo.load(tmp_path / "p.npz")


def test_weight_shape_mismatch_in_checkpoint(tmp_path):
    torch.save(
        {"fc.weight_mask": torch.ones(3, 4), "fc.weight_orig": torch.randn(4, 3)}, tmp_path / "p.pt"
    )
    with pytest.raises(
        MaskFileError, match=r"p\.pt: layer 'fc.weight': weight shape \(4, 3\) does not match"
    ):
        masktopo.load(tmp_path / "p.pt")
    # checked without the weights too, as safetensors and npz files are
    with pytest.raises(MaskFileError, match=r"weight shape \(4, 3\) does not match"):
        masktopo.load(tmp_path / "p.pt", weights=False)
    with pytest.raises(MaskFileError, match=r"weight shape \(4, 3\) does not match"):
        masktopo.info(tmp_path / "p.pt")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_in_checkpoint(tmp_path, bad):
    w = torch.randn(3, 4)
    w[2, 1] = bad
    torch.save({"fc.weight_mask": torch.ones(3, 4), "fc.weight_orig": w}, tmp_path / "p.pt")
    kind = "NaN" if bad != bad else "inf"
    with pytest.raises(MaskFileError, match=rf"p\.pt: layer 'fc.weight': weight has 1 {kind}"):
        masktopo.load(tmp_path / "p.pt")
    np.savez(tmp_path / "w.npz", **{"fc.weight": w.numpy()})
    with pytest.raises(MaskFileError, match=rf"w\.npz: layer 'fc.weight': weight has 1 {kind}"):
        masktopo.load(tmp_path / "w.npz", zeros_as_mask=True)


def test_corrupt_checkpoint_bytes(tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(MaskFileError, match="truncated or corrupt checkpoint"):
        masktopo.load(tmp_path / "garbage.pt")
    (tmp_path / "garbage.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(MaskFileError, match=r"truncated or corrupt \.npz"):
        masktopo.load(tmp_path / "garbage.npz")


def test_all_errors_are_masktopo_errors():
    assert issubclass(MaskFileError, MaskTopoError)


@pytest.mark.parametrize("with_weights", [True, False])
def test_npz_weight_shape_mismatch(tmp_path, with_weights):
    path = store.save(tmp_path / "m.npz", make_maskset())
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["weight/a.conv.weight"] = np.zeros((3, 2, 9), np.float32)
    np.savez_compressed(path, **arrays)
    # checked from the array header even when the weights themselves are not read
    with pytest.raises(MaskFileError, match=r"layer 'a\.conv\.weight': weight shape \(3, 2, 9\)"):
        masktopo.load(path, weights=with_weights)


# ---------------------------------------------------------------------------------------------
# weights at the kept positions only; checksums; sizes checked before allocating
# ---------------------------------------------------------------------------------------------
def test_kept_weights_round_trip_and_are_small(tmp_path):
    ms = make_maskset()  # weights are zero where the mask is: nothing is lost
    dense = store.save(tmp_path / "d.safetensors", ms)
    kept = store.save(tmp_path / "k.safetensors", ms, weights="kept")
    back = masktopo.load(kept)
    assert back == ms and back.equal(ms)
    with safe_open(str(kept), framework="pt") as f:
        md = f.metadata()
        assert md["format_version"] == "2" and md["weight_layout"] == "kept"
        assert f.get_slice("weight/z.fc.weight").get_shape() == [ms.nnz("z.fc.weight")]
    weight_bytes = sum(4 * ms.numel(n) for n in ms)
    assert dense.stat().st_size - kept.stat().st_size > 0.5 * weight_bytes
    info = masktopo.info(kept)
    assert info["has_weights"] and info["nnz"] == ms.nnz()
    with pytest.raises(MaskValidationError, match="safetensors layout"):
        store.save(tmp_path / "k.npz", ms, weights="kept")
    with pytest.raises(UnknownNameError, match="weight layout"):
        store.save(tmp_path / "k.safetensors", ms, weights="sparse")


def test_kept_weights_with_a_wrong_count_are_corrupt(tmp_path):
    path = store.save(tmp_path / "k.safetensors", make_maskset(), weights="kept")

    def drop_one(tensors):
        tensors["weight/z.fc.weight"] = tensors["weight/z.fc.weight"][:-1].clone()

    rewrite_safetensors(path, edit_tensors=drop_one)
    with pytest.raises(
        MaskFileError, match=r"'z\.fc\.weight': kept weights shape .* does not match"
    ):
        masktopo.load(path, weights=False)


def _flip_byte(path: Path, offset: int, bit: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= bit
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("layout", ["dense", "kept"])
def test_a_flipped_weight_byte_is_detected_by_its_checksum(tmp_path, layout):
    """A low mantissa byte changed: a finite weight still, so only the checksum sees it."""
    path = store.save(tmp_path / "m.safetensors", make_maskset(), weights=layout)
    start, _ = data_range(path, "weight/a.conv.weight")
    _flip_byte(path, start)
    with pytest.raises(MaskFileError, match=r"'a\.conv\.weight': the weight bytes do not match "
                       r"their recorded CRC-32 checksum \(the file is corrupt\)"):  # fmt: skip
        masktopo.load(path)
    assert masktopo.load(path, weights=False).nnz() == make_maskset().nnz()  # not read: not checked


def test_two_flipped_mask_bits_that_keep_the_count_are_detected(tmp_path):
    ms = make_maskset()
    path = store.save(tmp_path / "m.safetensors", ms.without_weights())
    bits = np.packbits(ms["z.fc.weight"].numpy().reshape(-1))
    on = next(i for i in range(len(bits) * 8) if bits[i // 8] >> (7 - i % 8) & 1)
    off = next(i for i in range(35) if not bits[i // 8] >> (7 - i % 8) & 1)
    start, _ = data_range(path, "mask/z.fc.weight")
    _flip_byte(path, start + on // 8, 1 << (7 - on % 8))
    _flip_byte(path, start + off // 8, 1 << (7 - off % 8))
    with pytest.raises(MaskFileError, match="mask bytes do not match their recorded CRC-32"):
        masktopo.load(path)


@pytest.mark.parametrize("fmt", ["npz", "pt"])
def test_a_flipped_byte_in_npz_and_pt_files_is_caught_by_the_zip_checksums(tmp_path, fmt):
    ms = make_maskset()
    path = store.save(tmp_path / f"m.{fmt}", ms)
    if fmt == "npz":  # uncompressed, so that the flip lands in the array bytes, not the stream
        np.savez(path, **{k: v for k, v in np.load(path, allow_pickle=False).items()})
    with zipfile.ZipFile(path) as z:
        member = next(i for i in z.infolist() if i.file_size > 64 and "data.pkl" not in i.filename)
    data_start = member.header_offset + 30 + len(member.filename) + len(member.extra)
    _flip_byte(path, data_start + member.file_size - 3)  # the last bytes: array data
    with pytest.raises(MaskFileError, match="truncated or corrupt"):
        masktopo.load(path)


def test_an_npz_claiming_a_huge_array_is_refused_before_allocating(tmp_path):
    """A 300-byte archive whose header says 10^12 elements: refused from the sizes alone."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
    header["shape"] = (10**6, 10**6)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    buf.write(b"\0" * 64)
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mask/fc.weight.npy", buf.getvalue())
    assert path.stat().st_size < 400
    with pytest.raises(MaskFileError, match=r"huge\.npz: truncated or corrupt \.npz file \(array "
                       r"'mask/fc\.weight' of shape \(1000000, 1000000\)"):  # fmt: skip
        masktopo.load(path)
    with pytest.raises(MaskFileError, match="needs 4000000000000 bytes"):
        masktopo.info(path)


def test_special_files_are_refused_as_inputs(tmp_path):
    zero = tmp_path / "zero.npz"
    zero.symlink_to("/dev/zero")  # reading it would never end
    with pytest.raises(MaskFileError, match="is a character device"):
        masktopo.load(zero)
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)  # reading it would wait for a writer forever
    with pytest.raises(MaskFileError, match="is a FIFO"):
        masktopo.info(fifo)


def _gadget(path: str) -> None:
    """Stands for a call of one of torch's own functions that an attacker would abuse."""


def test_legacy_checkpoint_with_a_torch_global_is_refused_not_called_corrupt(tmp_path):
    class TorchGadget:
        def __reduce__(self):
            return (torch.serialization.save, ("x", str(tmp_path / "written")))

    path = tmp_path / "evil-legacy.pt"
    torch.save({"fc.weight_mask": torch.ones(2, 3), "x": TorchGadget()}, path,
               _use_new_zipfile_serialization=False)  # fmt: skip
    with pytest.raises(MaskFileError, match=r"refusing to unpickle: .*torch\.serialization\.save"):
        masktopo.load(path)
    assert not (tmp_path / "written").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="makes the file unreadable by switching to nobody")
def test_an_unreadable_file_says_permission_denied():
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="masktopo-perm-", dir="/tmp"))  # nobody may enter it
    folder.chmod(0o755)
    path = store.save(folder / "m.safetensors", make_maskset())
    readable = store.save(folder / "r.safetensors", make_maskset())
    path.chmod(0o000)
    # Everything is imported (a readable file loaded) before the process becomes 'nobody', who
    # may not read the interpreter's own files here.
    code = (
        "import os, sys, masktopo\nmasktopo.load(sys.argv[2])\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "try:\n    masktopo.load(sys.argv[1])\nexcept masktopo.MaskFileError as e:\n    print(e)\n"
    )
    p = subprocess.run([sys.executable, "-c", code, str(path), str(readable)],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})  # fmt: skip
    shutil.rmtree(folder)
    assert p.stdout.strip() == f"{path}: cannot read (Permission denied)", p.stdout + p.stderr


def test_check_finite_names_the_file_and_the_tensors(tmp_path):
    from masktopo.store import check_finite

    good = {"a": torch.ones(3), "steps": torch.tensor(4), "half": torch.ones(2).half()}
    check_finite(tmp_path / "ok.pt", good)  # nothing raised
    bad = {f"t{i}": torch.tensor([1.0, float("nan") if i % 2 else float("inf")])
           for i in range(5)}  # fmt: skip
    bad["b16"] = torch.tensor([float("inf")], dtype=torch.bfloat16)
    with pytest.raises(MaskFileError, match=r"x\.pt: holds NaN or inf values in t0, t1, t2 "
                                            r"\(\+3 more\)$"):  # fmt: skip
        check_finite(tmp_path / "x.pt", bad)
