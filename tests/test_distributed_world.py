"""masktopo.distributed: join, describe and leave a torchrun launch's process group."""

import os
import shutil
import subprocess
import sys

import pytest
import torch.distributed as dist

from masktopo.distributed import World, close_world, current_world, init_world

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="needs torch.distributed gloo")  # fmt: skip

SCRIPT = """
import sys
from pathlib import Path
import torch.distributed as dist
from masktopo.distributed import close_world, current_world, exit_process, init_world
w = init_world("cpu")
assert w.size == 2 and w.distributed and dist.is_initialized()
assert current_world().rank == w.rank
assert init_world("cpu").rank == w.rank  # joining again keeps the group
close_world()
assert not dist.is_initialized() and current_world().size == 1
Path(sys.argv[1], f"rank{w.rank}").write_text("ok")  # a file per rank: a shared pipe interleaves
exit_process(0)  # gloo's threads can abort a process at interpreter exit (exit_process's doc)
"""


def test_one_process_has_no_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    w = init_world("cpu")
    assert (w.rank, w.size, w.distributed, w.main) == (0, 1, False, True)
    assert not dist.is_initialized()
    close_world()  # nothing started: nothing to do
    assert repr(current_world()) == "World(rank=0, size=1)"
    assert not World(1, 2).main and World(1, 2).distributed


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")
def test_a_started_group_is_destroyed(tmp_path):
    script = tmp_path / "world.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.run([shutil.which("torchrun"), "--standalone", "--nproc_per_node=2", str(script),
                        str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["ok", "ok"]


def test_a_callers_group_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as under torchrun; the caller's group has one rank
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)  # fmt: skip
    try:
        w = init_world("cpu")
        assert (w.rank, w.size) == (0, 1)
        close_world()
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", ["1", "2"])
def test_exit_process_flushes_and_keeps_the_code(world, tmp_path):
    """Under torchrun the process ends without interpreter finalization (where gloo's threads
    can abort it), after flushing what it printed; elsewhere it is a plain SystemExit."""
    code = ("import atexit, sys\nfrom masktopo.distributed import exit_process\n"
            "atexit.register(lambda: print('finalized'))\n"
            "print('done', end='')\nsys.stderr.write('err')\nexit_process(3)\n")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "WORLD_SIZE": world}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=120)  # fmt: skip
    assert p.returncode == 3 and p.stderr == "err"
    assert p.stdout == ("done" if world == "2" else "donefinalized\n")


def test_process_device_reads_the_flag_and_the_launch(monkeypatch):
    """``--device``: cpu is the CPU; auto is the CPU without a GPU; cuda is this process's GPU
    (its LOCAL_RANK) or a one-line error without one."""
    import torch

    from masktopo.distributed import process_device
    from masktopo.errors import MaskValidationError

    assert process_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("LOCAL_RANK", "1")
    if torch.cuda.is_available():
        assert process_device("cuda") == torch.device("cuda", 1)
        assert process_device("auto").type == "cuda"
        return
    assert process_device("auto") == torch.device("cpu")
    with pytest.raises(MaskValidationError, match=r"^device cuda: no CUDA device is available"):
        process_device("cuda")
