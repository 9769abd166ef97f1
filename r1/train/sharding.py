"""`train.parallel`: how the model and the optimizer are spread over torchrun's processes.

    none   one process, nothing shared
    ddp    DistributedDataParallel: every rank holds the whole model and optimizer state
    zero1  DDP + `ZeroRedundancyOptimizer`: every rank holds the whole model, but only the
           optimizer state of its 1/N of the parameters (AdamW: P + 2P/N instead of 3P)
    fsdp   FSDP2 (`torch.distributed.fsdp.fully_shard`): parameters, gradients and optimizer
           state sharded 1/N; each shard unit is gathered only around its own forward/backward

Shard units (fsdp): a model may define `shard_units() -> list[nn.Module]`; otherwise each member
of an `nn.ModuleList` (a transformer's blocks) and each `nn.Sequential` (a CNN's stages) below the
root is one unit (`shard_units`); the root module holds the rest (embeddings, stems, heads).

Launch (one machine): `torchrun --nproc_per_node=N -m r1.cli train CONFIG train.parallel=fsdp`. Several
machines: the same command on each, with `--nnodes=M --rdzv-backend=c10d --rdzv-endpoint=HOST:PORT
--rdzv-id=JOB` (HOST: any one of the machines, reachable from all; NCCL on GPUs, gloo on CPUs).

Checkpoints never depend on the mode: `state_dicts` gathers the full model and the optimizer
state in `torch.optim.Optimizer.state_dict()` form (parameters numbered in optimizer order) on
rank 0, and `load_state_dicts` shards such a full state again, so that `checkpoints/last.pt` of a
run saved with 2 processes resumes with 1 or 2, in any mode. Evaluation (rank 0 only) runs on
an unsharded copy of the model, refreshed from the shards by `refresh_full()` (a collective).
"""
from __future__ import annotations

import contextlib
import copy
import logging

import torch
import torch.nn as nn

from r1.errors import ConfigError

log = logging.getLogger("r1.train")
MODES = ("auto", "none", "ddp", "fsdp", "zero1")


def resolve_parallel(mode: str, world: int) -> str:
    """`auto` -> ddp under torchrun, none in one process; a sharded mode in one process is none
    (e.g. resuming a 2-process run alone)."""
    if mode not in MODES:
        raise ConfigError(f"train.parallel: {mode!r} is not allowed; allowed: {', '.join(MODES)}")
    if world <= 1:
        if mode in ("ddp", "fsdp", "zero1"):
            log.info("train.parallel=%s in one process: training unsharded", mode)
        return "none"
    if mode == "none":
        raise ConfigError(f"train.parallel: none under torchrun with {world} processes would train "
                          f"{world} unsynchronised copies; allowed there: auto, ddp, fsdp, zero1")
    return "ddp" if mode == "auto" else mode


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The submodules FSDP shards one by one (the root shards the rest): `model.shard_units()` when
    defined; else the outermost containers below the root: each member of an `nn.ModuleList` (a
    transformer's blocks) and each `nn.Sequential` (a CNN's stages), except a container holding
    every parameter (an MLP's one `Sequential`), which is looked into instead; `nn.ModuleDict`s
    stay with the root. A unit's parameters are gathered only around its own `forward`: a model
    that reads a submodule's weights otherwise must list its units itself."""
    if hasattr(model, "shard_units"):
        return list(model.shard_units())
    total = sum(1 for p in model.parameters() if p.requires_grad)
    units: list[nn.Module] = []

    def trainable(m: nn.Module) -> int:
        return sum(1 for p in m.parameters() if p.requires_grad)

    def visit(module: nn.Module) -> None:
        for child in module.children():
            n = trainable(child)
            if n == 0 or isinstance(child, nn.ModuleDict):  # looked up by key, maybe read without forward
                continue
            if isinstance(child, nn.ModuleList) and n < total:
                units.extend(m for m in child if trainable(m))
            elif isinstance(child, nn.Sequential) and n < total:
                units.append(child)
            else:
                visit(child)

    visit(model)
    return units


class Sharding:
    """One run's parallel mode: wraps the model and the optimizer, and gathers / shards state."""

    def __init__(self, mode: str, dist_info, device: torch.device):
        self.mode, self.dist, self.device = mode, dist_info, device
        self._full: nn.Module | None = None  # fsdp: the unsharded copy rank 0 evaluates

    @property
    def uses_ddp(self) -> bool:
        return self.mode in ("ddp", "zero1")

    # ------------------------------------------------------------------ wrapping
    def shard_model(self, model: nn.Module, cfg) -> nn.Module:
        """fsdp: shard `model` in place (its parameters become DTensors); other modes: as is."""
        if self.mode != "fsdp":
            return model
        if cfg.train.ema:
            raise ConfigError("train.ema: not available with train.parallel=fsdp (the average would need "
                              "the full weights on every rank); use zero1 or ddp")
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        if self.dist.is_main:
            self._full = copy.deepcopy(model)
        mesh = init_device_mesh(self.device.type, (self.dist.world,))
        units = shard_units(model)
        for unit in units:
            fully_shard(unit, mesh=mesh)
        fully_shard(model, mesh=mesh)
        log.info("fsdp: %d shard units + root over %d ranks", len(units), self.dist.world)
        return model

    def wrap_optimizer(self, opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """zero1: the same optimizer class and groups, each rank stepping only its share."""
        if self.mode != "zero1":
            return opt
        from torch.distributed.optim import ZeroRedundancyOptimizer

        groups = [dict(g) for g in opt.param_groups]
        defaults = {k: v for k, v in opt.defaults.items() if k != "decoupled_weight_decay"}
        return ZeroRedundancyOptimizer(groups, optimizer_class=type(opt), **defaults)

    def grad_sync(self, ddp: nn.Module | None, model: nn.Module, sync: bool):
        """Context for one micro-batch: gradient all-reduce / reduce-scatter only when `sync`."""
        if self.mode == "fsdp":
            model.set_requires_gradient_sync(sync)
            return contextlib.nullcontext()
        if ddp is not None and not sync:
            return ddp.no_sync()
        return contextlib.nullcontext()

    @property
    def full(self) -> nn.Module | None:
        """fsdp, rank 0: the unsharded copy that evaluation and the saved artifact use; else None."""
        return self._full

    def refresh_full(self, model: nn.Module) -> None:
        """fsdp: load the current weights into the unsharded copy. Collective: every rank calls it."""
        if self.mode != "fsdp":
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self._full is not None:
            self._full.load_state_dict(full)

    # ------------------------------------------------------------------ checkpoint state
    def state_dicts(self, model: nn.Module, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
        """(model, optimizer) full state dicts, complete on rank 0. Collective except in none/ddp."""
        if self.mode == "zero1":
            opt.consolidate_state_dict(to=0)
            return model.state_dict(), (opt.state_dict() if self.dist.is_main else {})
        if self.mode != "fsdp":
            return model.state_dict(), opt.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_sd, optim_sd = get_state_dict(model, opt, options=options)
        return model_sd, (_by_index(optim_sd) if self.dist.is_main else {})

    def load_state_dicts(self, model: nn.Module, opt: torch.optim.Optimizer, model_sd: dict, optim_sd: dict) -> None:
        """Load full state dicts (as `state_dicts` returns) into this rank's model and optimizer."""
        if self.mode != "fsdp":
            model.load_state_dict(model_sd)
            opt.load_state_dict(optim_sd)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        names = _optimizer_param_names(model, opt)
        set_state_dict(model, opt, model_state_dict=model_sd, optim_state_dict=_by_name(optim_sd, names),
                       options=StateDictOptions(full_state_dict=True))


# ---------------------------------------------------------------------- optimizer state keys
def _by_index(sd: dict) -> dict:
    """Optimizer state keyed by parameter name (torch.distributed.checkpoint) -> keyed by the
    parameter's position in the optimizer's groups (`Optimizer.state_dict()`)."""
    names = [n for g in sd["param_groups"] for n in g["params"]]
    index = {n: i for i, n in enumerate(names)}
    return {"state": {index[n]: v for n, v in sd["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in sd["param_groups"]]}


def _optimizer_param_names(model: nn.Module, opt: torch.optim.Optimizer) -> list[str]:
    by_id = {}
    for name, p in model.named_parameters():
        by_id.setdefault(id(p), name)
    return [by_id[id(p)] for g in opt.param_groups for p in g["params"]]


def _by_name(sd: dict, names: list[str]) -> dict:
    """The inverse of `_by_index` for this optimizer's parameters."""
    count = sum(len(g["params"]) for g in sd["param_groups"])
    if count != len(names):
        raise ConfigError(f"checkpoint optimizer state holds {count} parameters, the model {len(names)}")
    return {"state": {names[int(i)]: v for i, v in sd["state"].items()},
            "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]} for g in sd["param_groups"]]}
