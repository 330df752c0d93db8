"""Model folders for the LLM tests (tests/analysis/test_llm_*.py, tests/cli/test_llm_*.py):
small Llama-shaped checkpoints with pruned weights, and the bounded-memory measurement."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from masktopo.analysis.structure import prune_nm, prune_per_row
from masktopo.store.hf_folder import llama_shapes, write_folder

ROOT = Path(__file__).resolve().parents[1]
SHARD_1 = "pytorch_model-00001-of-00002.bin"
SHARD_2 = "pytorch_model-00002-of-00002.bin"


def llama_tensors(dtype=torch.bfloat16, seed: int = 0, hidden=48, inter=128, blocks=2, vocab=80):
    """A small Llama-shaped checkpoint: attention 50 % per row (Wanda-style), MLP 2:4, dense
    embedding and head, norms."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in llama_shapes(hidden, inter, blocks, vocab).items():
        w = torch.randn(shape, generator=g)
        if len(shape) == 1:
            w = 1 + 0.1 * w
        elif "embed" not in name and "lm_head" not in name:
            w = prune_nm(w, 2, 4) if ".mlp." in name else prune_per_row(w, 0.5)
        out[name] = w.to(dtype)
    return out


def tiny_llama_tensors(seed=0, blocks=2):
    """A small Llama-shaped state dict, bf16: the MLP up projections 2:4, the other matrices
    50 % per row (the command-line tests' model)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in llama_shapes(32, 96, blocks, 40).items():
        w = torch.randn(shape, generator=g)
        if len(shape) == 2 and "embed" not in name and "lm_head" not in name:
            w = prune_nm(w, 2, 4) if "up_proj" in name else prune_per_row(w, 0.5)
        out[name] = w.to(torch.bfloat16)
    return out


MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from masktopo.analysis.lazy import analyze_layers, refs_of_source
    from masktopo.store.hf_folder import open_source

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    src = open_source(sys.argv[1])
    refs = refs_of_source(src)
    analyze_layers(refs[:2], metrics=["density", "n_components"])  # warm up: imports, kernels
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
        f.write("5")
    base = status("VmRSS:")
    df = analyze_layers(refs, metrics=["density", "n_components"])
    print(json.dumps({"base": base, "peak": status("VmHWM:"), "bytes": src.nbytes,
                      "format": src.format, "rows": len(df),
                      "density": float(df["density"].mean())}))
    """
)


def lazy_memory(folder: Path, **write) -> dict:
    """Write 48 layers of 1024 × 1024 float32 (4 MiB each, 30 % per row) as a model folder
    (``write``: :func:`write_folder`'s options), analyze it lazily in a fresh process and return
    :data:`MEMORY_SCRIPT`'s measurements."""
    g = torch.Generator().manual_seed(3)
    tensors = {}
    for i in range(48):
        w = torch.randn(1024, 1024, generator=g)
        tensors[f"model.layers.{i}.mlp.up_proj.weight"] = prune_per_row(w, 0.3)
    write_folder(folder, tensors, **write)
    del tensors
    env = dict(os.environ, PYTHONPATH=str(ROOT), MASKTOPO_WORKERS="2")
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(folder)],
                         capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])
