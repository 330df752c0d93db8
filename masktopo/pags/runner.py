"""PAGS from names: build the model, data, base mask and candidate source, then run the engine.

This is what ``masktopo pags`` calls. Everything that can fail on bad input (unknown names, missing
data files, a warm-start checkpoint for another model, an output directory that is in use) is
checked before the output directory is created, so a bad invocation writes nothing.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import MaskFileError
from ..files import require_parquet
from ..runs import check_out_dir
from ..runs.layout import INIT_FILE
from ..seeding import generator
from .config import PagsConfig
from .engine import PagsResult, run_pags
from .sampling import RescoreSource, RewireSource, full_batches, generators
from .sampling import _gather as gather


def check_method(name: str):
    """The PaI method ``name`` from :data:`masktopo.pai.METHODS` (UnknownNameError otherwise)."""
    from .. import pai

    return pai.get_method(name)


def load_warm_start(model: torch.nn.Module, path: str | Path, model_name: str) -> None:
    """Load a checkpoint's weights into ``model``; a checkpoint for another model is an error."""
    from ..store import check_finite, read_state_dict

    path = Path(path)
    if not path.exists():
        raise MaskFileError(path, "warm-start checkpoint not found")
    state = read_state_dict(path)
    check_finite(path, state)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = sorted(
        k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape)
    )
    if missing or extra or shapes:
        parts = []
        for what, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", shapes)):
            if keys:
                more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
                parts.append(f"{what}: {', '.join(keys[:3])}{more}")
        raise MaskFileError(
            path, f"is not a checkpoint of model {model_name!r} ({'; '.join(parts)})"
        )
    model.load_state_dict(state, strict=True)


class _OnDevice:
    """Batches moved to ``device`` as they are read."""

    def __init__(self, batches, device):
        self.batches, self.device = batches, torch.device(device)

    def __iter__(self):
        for batch in self.batches:
            yield tuple(x.to(self.device) for x in batch)


#: Pruning rounds of the iterative PaI methods in the PAGS author loop (pags-spec §4.2):
#: ``sparsity_r = 1 - d^{r/10}``, for the base and every candidate.
AUTHOR_ROUNDS = 10


def base_batches(dataset, config: PagsConfig) -> list:
    """The minibatches the base mask is scored on: the whole training set in order (the author
    code's vanilla ticket), or ``score_batches`` batches in an order of their own (the
    ``pai-batches`` stream of the seed, as ``masktopo train --method static`` draws them)."""
    if config.score_batches is None:
        return list(full_batches(dataset, config.batch_size))
    n, b = len(dataset), config.batch_size
    perm = torch.randperm(n, generator=generator(config.seed, "pai-batches"))
    count = min(config.score_batches, -(-n // b))
    return [gather(dataset, perm[i * b : (i + 1) * b]) for i in range(count)]


def prepare(config: PagsConfig):
    """Model, θ, base mask and candidate source for ``config`` (nothing is written).

    Returns ``(base, theta, source, info, state)``: ``info`` describes the run for run.json;
    ``state`` is the model's whole state (every parameter and buffer, on the CPU) that was
    scored.
    """
    from .. import pai, zoo

    method = check_method(config.method)
    spec = zoo.get_spec(config.dataset)
    data_free = bool(method.data_free)
    if config.device == "cuda" and not torch.cuda.is_available():
        raise MaskFileError("--device", "cuda: no CUDA device is available on this machine")
    init = generator(config.seed, "model")  # the trainer's model stream: the same θ
    model = zoo.get_model(config.model, dataset=spec, generator=init,
                          **({} if config.width is None else {"width": config.width}))  # fmt: skip
    dataset = None
    if not data_free:
        dataset = zoo.load_dataset(config.dataset, data_dir=config.data_dir, split="train")
    if config.warm_start is not None:
        load_warm_start(model, config.warm_start, config.model)
    # the whole scored network (biases, BatchNorm, a warm start): run.json's init.safetensors
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    model = model.to(config.device)
    params = zoo.maskable_parameters(model)
    theta = {n: p.detach().clone().cpu() for n, p in params.items()}
    g0, _ = generators(config.seed, 0)
    batches = None
    if dataset is not None:
        batches = _OnDevice(base_batches(dataset, config), config.device)
    # The dataset's own loss (cross-entropy, or BCE for a one-logit binary task) for the scorers.
    # SynFlow needs the input shape (the other methods ignore it).
    kw = {"in_shape": spec.in_shape} if data_free else {"loss": spec.loss_fn}
    if method.default_iterations > 1:  # an iterative method: the author loop's rounds
        kw["iterations"] = AUTHOR_ROUNDS if config.pai_rounds is None else config.pai_rounds
    base = pai.prune(model, config.method, config.density, batches=batches, generator=g0, **kw)
    if config.sampler == "rewire":
        source = RewireSource(base, config.seed)
    else:
        inner = RescoreSource(model, config.method, config.density, config.seed,
                              dataset=dataset, iters=config.iters, batch_size=config.batch_size,
                              data_free=data_free, noise=bool(method.rescore_noise),
                              prune_kwargs=kw, base=base)  # fmt: skip
        source = inner
        if config.device != "cpu" and dataset is not None:
            orig = inner.prune

            def prune_on_device(model, method, density, *, batches, generator, **kw):
                return orig(model, method, density, batches=_OnDevice(batches, config.device),
                            generator=generator, **kw)  # fmt: skip

            inner.prune = prune_on_device
    info = {"model": config.model, "dataset": config.dataset, "method": config.method,
            "data_free": data_free, "n_params_masked": sum(p.numel() for p in params.values())}  # fmt: skip
    return base, theta, source, info, state


def run(config: PagsConfig, out: str | Path, *, resume: bool = False, progress: bool = False,
        stop=None) -> PagsResult:  # fmt: skip
    """Run PAGS as ``masktopo pags`` does: validate, build, then write ``out``."""
    out = Path(out)
    require_parquet("pags", "writes candidates.parquet")
    check_out_dir(out, "pags", resume=resume)
    base, theta, source, info, state = prepare(config)
    # init.safetensors: written by the engine (rank 0) while the run goes on
    return run_pags(base, theta, source, config, out=out, resume=resume, progress=progress,
                    stop=stop, run_info=info,
                    extra_files={INIT_FILE: lambda: initial_state(state)})  # fmt: skip


def initial_state(state: dict[str, torch.Tensor]) -> bytes:
    """The scored network's whole state as ``out/init.safetensors``'s bytes, so that
    ``masktopo train --init-masks OUT`` starts from exactly that network."""
    from safetensors.torch import save

    return save(state, metadata={"format": "masktopo.init"})
