"""``masktopo analyze`` / ``info`` on Hugging Face model folders: the same rows as one file, layer
selection, bad folders (one-line errors), and torchrun with 2 processes equal to 1 process."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from _llm_files import tiny_llama_tensors
from cli_helpers import ROOT, run_masktopo

from masktopo.store.hf_folder import INDEX_FILE, write_folder


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    base = tmp_path_factory.mktemp("hf")
    t = tiny_llama_tensors()
    write_folder(base / "model", t, shards=2)
    write_folder(base / "one", t)
    return base


def _csv(proc) -> pd.DataFrame:
    assert proc.returncode == 0, proc.stderr
    return pd.read_csv(io.StringIO(proc.stdout), keep_default_na=False, na_values=[""])


def test_folder_equals_one_file(model):
    folder = _csv(run_masktopo("analyze", model / "model", "--include", "embeddings,head",
                               "--format", "csv", cwd=model))  # fmt: skip
    lazy = _csv(run_masktopo("analyze", model / "one" / "model.safetensors", "--mask", "nonzero",
                             "--include", "embeddings,head", "--format", "csv", cwd=model))  # fmt: skip
    ordinary = _csv(run_masktopo("analyze", model / "one" / "model.safetensors", "--zeros-as-mask",
                                 "--structure", "on", "--format", "csv", cwd=model))  # fmt: skip
    pd.testing.assert_frame_equal(folder, lazy)
    ordinary = ordinary.set_index("layer").loc[folder["layer"]].reset_index()[folder.columns]
    pd.testing.assert_frame_equal(folder, ordinary)
    assert len(folder) == 17  # 16 layers + the network row
    layers = folder[folder["level"] == "layer"]
    assert set(layers["nm"].dropna()) == {"2:4"}
    assert (layers.loc[layers["layer"].str.contains("up_proj"), "nm"] == "2:4").all()
    net = folder[folder["level"] == "network"].iloc[0]
    assert pd.isna(net["nm"]) and net["deg_out_min"] == layers["deg_out_min"].min()


def test_layers_glob_and_no_structure(model):
    df = _csv(run_masktopo("analyze", model / "model", "--layers", "model.layers.*.mlp.*",
                           "--structure", "off", "--metrics", "mu_hat", "--no-network",
                           "--format", "csv", cwd=model))  # fmt: skip
    assert list(df.columns) == ["level", "layer", "layer_kind", "shape", "mu_hat", "reason"]
    assert len(df) == 6 and df["layer"].str.contains(".mlp.").all()
    out = run_masktopo("analyze", model / "model", "--layers", "nope.*", cwd=model)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [
        f"masktopo: error: {model / 'model'}: holds no weight matrices to analyze matching "
        "--layers nope.*"
    ]


def test_info_of_a_folder(model):
    out = run_masktopo("info", model / "model", cwd=model)
    assert out.returncode == 0, out.stderr
    assert "format: hf_folder" in out.stdout and "N:M" in out.stdout
    assert "not analyzed: 7 tensors (1 embedding, 1 head, 5 norm" in out.stdout
    d = json.loads(run_masktopo("info", model / "model", "--json", "--layers", "*.up_proj.*",
                                cwd=model).stdout)[0]  # fmt: skip
    assert d["n_layers"] == 2 and {x["nm"] for x in d["layers"]} == {"2:4"}


def _bad(tmp_path, model, case):
    d = tmp_path / case
    d.mkdir()
    for p in (model / "model").iterdir():
        (d / p.name).write_bytes(p.read_bytes())
    shard = d / "model-00002-of-00002.safetensors"
    if case == "no_weights":
        for p in d.glob("model*"):
            p.unlink()
        return d, d, "holds no model weights"
    if case == "missing_shard":
        shard.unlink()
        return d, shard, "is named in model.safetensors.index.json"
    if case == "truncated":
        shard.write_bytes(shard.read_bytes()[:-64])
        return d, shard, "truncated safetensors file"
    index = json.loads((d / INDEX_FILE).read_text())
    if case == "folder_shard":  # "." (the model folder itself) named as a shard
        index["weight_map"] = {k: "." for k in index["weight_map"]}
        (d / INDEX_FILE).write_text(json.dumps(index))
        return d, d / INDEX_FILE, "is a folder, not a weights file"
    index["weight_map"] = {k: f"../{v}" for k, v in index["weight_map"].items()}
    (d / INDEX_FILE).write_text(json.dumps(index))
    return d, d / INDEX_FILE, "points outside the model folder"


@pytest.mark.parametrize("case", ["no_weights", "missing_shard", "truncated", "outside",
                                  "folder_shard"])  # fmt: skip
@pytest.mark.parametrize("command", ["analyze", "info"])
def test_bad_folders(tmp_path, model, case, command):
    d, named, what = _bad(tmp_path, model, case)
    out = run_masktopo(command, d, "--out" if command == "analyze" else "--json",
                       *([tmp_path / "o.csv"] if command == "analyze" else []), cwd=tmp_path)  # fmt: skip
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"masktopo: error: {named}:"), lines
    assert what in lines[0]
    assert not (tmp_path / "o.csv").exists()


def _torchrun(nproc: int, *argv, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MASKTOPO_WORKERS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "masktopo", *map(str, argv)]  # fmt: skip
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_torchrun_two_processes_equal_one(model, tmp_path):
    """Layers split across 2 gloo ranks by cost and gathered on rank 0: the same file as 1
    process (rank 1 writes nothing)."""
    one = run_masktopo("analyze", model / "model", "--out", tmp_path / "one.csv", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    two = _torchrun(2, "analyze", model / "model", "--out", tmp_path / "two.csv", cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (tmp_path / "one.csv").read_text(), (tmp_path / "two.csv").read_text()
    assert a == b
    assert len(pd.read_csv(tmp_path / "two.csv")) == 15


def test_mask_nonzero_on_a_masktopo_file_reads_its_stored_masks(tmp_path):
    """``--mask nonzero`` is for plain checkpoints: a masktopo mask file whose weights are dense
    (as PAGS's best.safetensors stores θ) is read by its masks, with a note saying so."""
    import torch

    import masktopo
    from masktopo import MaskSet

    g = torch.Generator().manual_seed(0)
    masks = {"fc1.weight": torch.rand(12, 20, generator=g) < 0.3,
             "fc2.weight": torch.rand(4, 12, generator=g) < 0.5}  # fmt: skip
    weights = {n: torch.randn(m.shape, generator=g) for n, m in masks.items()}  # dense θ
    path = tmp_path / "best.safetensors"
    masktopo.save(path, MaskSet(masks, weights=weights))
    p = run_masktopo("analyze", path, "--mask", "nonzero", "--metrics", "density", "--format",
                     "csv", cwd=tmp_path)  # fmt: skip
    df = _csv(p)
    layers = df[df["level"] == "layer"].set_index("layer")["density"]
    assert layers.to_dict() == pytest.approx({n: m.float().mean().item() for n, m in masks.items()})
    assert "a masktopo mask file; its stored masks are analyzed" in p.stderr


def test_an_all_zero_layer_in_a_folder_names_the_option(tmp_path):
    t = tiny_llama_tensors()
    name = "model.layers.0.self_attn.q_proj.weight"
    t[name] = t[name] * 0
    write_folder(tmp_path / "m", t)
    p = run_masktopo("analyze", tmp_path / "m", "--metrics", "density", cwd=tmp_path)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert f"layer {name!r} has an all-zero mask" in p.stderr
    assert "--allow-empty-layers" in p.stderr
    p = run_masktopo("analyze", tmp_path / "m", "--metrics", "density", "--allow-empty-layers",
                     "--format", "csv", cwd=tmp_path)  # fmt: skip
    df = _csv(p)
    assert df.set_index("layer").loc[name, "density"] == 0


def test_info_suggests_include_only_for_what_it_adds(model):
    p = run_masktopo("info", model / "model", cwd=model)
    assert p.returncode == 0, p.stderr
    assert "--include embeddings,head adds the embeddings and the head" in p.stdout
    p = run_masktopo("info", model / "model", "--include", "embeddings,head", "--layers",
                     "model.embed*,lm_head*", cwd=model)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "not analyzed:" in p.stdout and "--include" not in p.stdout  # left out by --layers


def test_torchrun_equals_one_process_on_the_dense_route(tmp_path):
    """Layers on the dense route (LLM-sized, 30–70 % density) give the same bytes under torchrun
    (2 ranks, one BLAS thread each) as in one process with the machine's default threads: the
    route's BLAS runs on one thread wherever it runs (:func:`masktopo.threads.one_blas_thread`;
    OpenBLAS rounds some products differently on two)."""
    import torch

    g = torch.Generator().manual_seed(3)
    t = {}
    for i, shape in enumerate([(1024, 1536), (1024, 1024), (64, 128)]):
        w = torch.randn(shape, generator=g)
        t[f"model.layers.{i}.mlp.down_proj.weight"] = (w * (w.abs() > 0.6745)).to(torch.bfloat16)
    f = write_folder(tmp_path / "m", t)
    args = ("analyze", f, "--no-network")  # every metric: the IMDB groups' Blocks too
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MASKTOPO_WORKERS")}
    one = subprocess.run([sys.executable, "-m", "masktopo", *map(str, args), "--out",
                          str(tmp_path / "one.csv")], cwd=tmp_path, capture_output=True, text=True,
                         env=dict(env, PYTHONPATH=str(ROOT)), timeout=600)  # fmt: skip
    assert one.returncode == 0, one.stderr
    two = _torchrun(2, *args, "--out", tmp_path / "two.csv", cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert (tmp_path / "one.csv").read_text() == (tmp_path / "two.csv").read_text()
