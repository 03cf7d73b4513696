"""The generic training loop and the Objective interface the methods implement.

A method (DINO, the pseudo-label classifier, contrastive, MeMo) subclasses
:class:`Objective`: it builds its modules, says which module is optimised
and which modules are the backbones to export, computes the loss of a batch,
and keeps any extra state (teacher, centre ...). :class:`Trainer` does the
rest: data loading, optimiser and schedules from YAML, DDP, gradient
clipping, logging, checkpoints, exact resume and the final export.

Experiment dir layout::

    config.yaml               merged config (a resumed run must use the same)
    checkpoints/ckpt-e<epoch>-s<step>.pt   backbone-file layout + trainer state
    log/train.log, metrics.tsv, loss.png, final.pt, .done
"""

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from pyspk.config import ConfigError, Value, check_keys, check_values, load_yaml, save_config
from pyspk.device import cleanup_distributed, init_distributed
from pyspk.fileutil import PathLike, dir_lock
from pyspk.logutil import setup_logging
from pyspk.models import backbone_file_content, full_config, save_backbones, write_backbone_file
from pyspk.train import checkpoint as ckpt
from pyspk.train.augment import BatchAugmenter
from pyspk.train.data import build_loader
from pyspk.train.metrics import MetricsLog, plot_metrics
from pyspk.train.online_aug import build_frontend
from pyspk.train.schedules import build_schedule
from pyspk.train.wav_data import build_training_source

log = logging.getLogger(__name__)

TOP_KEYS = ("objective", "seed", "data", "model", "optim", "train")
OPTIM_KEYS = ("name", "lr", "lr_reference_batch", "weight_decay", "momentum", "nesterov", "betas", "eps", "clip_grad",
              "clip_mode")
CLIP_MODES = ("global", "per_param")
TRAIN_KEYS = ("epochs", "log_every", "ckpt_every_steps", "keep_checkpoints", "average_last", "amp", "threads",
              "sync_batchnorm")
# What resume() reads from a checkpoint.
RESUME_KEYS = ("steps_per_epoch", "backbones", "objective", "optimizer", "rng", "step")
# Types and ranges of the scalar keys (schedules such as optim.lr are checked by build_schedule).
VALUE_SCHEMAS = {
    "train": {"epochs": Value(int, 1), "log_every": Value(int, 1), "ckpt_every_steps": Value(int, 0),
              "keep_checkpoints": Value(int, 0), "average_last": Value(int, 0), "amp": Value(bool),
              "threads": Value(int, 0),
              "sync_batchnorm": Value(bool)},
    "optim": {"momentum": Value(float, 0, 1), "nesterov": Value(bool), "eps": Value(float, 0, low_open=True),
              "clip_grad": Value(float, 0), "lr_reference_batch": Value(int, 1)},
    "data": {"batch_size": Value(int, 1), "num_workers": Value(int, 0), "use_vad": Value(bool),
             "aug_prob": Value(float, 0, 1)},
}


def lr_scale(optim: Mapping[str, Any], global_batch: int) -> float:
    """The linear scaling rule (Goyal et al.; DINO): optim.lr is for ``optim.lr_reference_batch`` utterances.

    With ``lr_reference_batch`` set, the learning rate is multiplied by global batch / reference batch,
    so a config keeps its meaning on 1, 4 or 8 GPUs; without it, optim.lr is used as written.
    """
    reference = optim.get("lr_reference_batch")
    if reference is None:
        return 1.0
    scale = global_batch / int(reference)
    log.info("optim.lr x %.4g: global batch %d / optim.lr_reference_batch %d (linear scaling rule)", scale,
             global_batch, int(reference))
    return scale


def sync_batchnorm(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` with BatchNorm statistics computed over the whole global batch under DDP (train.sync_batchnorm).

    torch synchronises BatchNorm only on CUDA (NCCL); on the CPU (gloo) each process keeps its own
    statistics, and the log says so.
    """
    if device.type != "cuda":
        log.warning("train.sync_batchnorm: needs CUDA; BatchNorm stays per process on %s", device)
        return module
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)


class Objective:
    """What the trainer needs from a training method; subclasses override the methods.

    ``section``: the method's own config section name. ``metric_names``: the
    extra per-step statistics ``compute_loss`` returns (logged averaged).
    ``schedule_names``: scheduled scalars ``schedule_values`` returns.
    """

    section: str | None = None
    metric_names: tuple[str, ...] = ()
    schedule_names: tuple[str, ...] = ()

    def __init__(self, data_dir: str | None = None):
        # The training data dir, for objectives that read more than the crops (labels, utt2label).
        self.data_dir = data_dir

    def build(self, config: dict[str, Any], steps_per_epoch: int, total_steps: int, device: torch.device) -> None:
        """Create the modules (on ``device``) and the method's own schedules."""
        raise NotImplementedError

    def trainable(self) -> nn.Module:
        """The module whose parameters the optimiser updates (the trainer wraps it in DDP)."""
        raise NotImplementedError

    def backbones(self) -> tuple[dict[str, nn.Module], str]:
        """``({name: backbone module}, default_name)`` written to checkpoints and final.pt."""
        raise NotImplementedError

    def compute_loss(self, model: nn.Module, batch: dict[str, Any],
                     step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(loss, {metric: scalar tensor})`` for one batch; ``model`` is trainable(), maybe DDP-wrapped.

        ``batch`` is already on the device and augmented: ``{"crops": {name:
        (B, count, frames, dim)}, "index": (B,)}``.
        """
        raise NotImplementedError

    def param_groups(self, module: nn.Module) -> list[dict[str, Any]]:
        """Parameter groups; by convention biases and norm weights (1-D) get no weight decay."""
        decay, no_decay = [], []
        for param in module.parameters():
            if param.requires_grad:
                (no_decay if param.ndim <= 1 else decay).append(param)
        return [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False}]

    def schedule_values(self, step: int) -> dict[str, float]:
        """The values of the ``schedule_names`` scalars at ``step``."""
        return {}

    def lr_factor(self, step: int) -> float:
        """A factor on optim.lr's schedule at ``step`` (e.g. a lower rate in a later training step)."""
        return 1.0

    def sampling_labels(self, config: dict[str, Any]) -> Sequence[int] | None:
        """A class per dataset item when batches should draw classes uniformly, else None (plain shuffling).

        Called before :meth:`build`, with the whole config.
        """
        return None

    def after_backward(self, step: int) -> None:
        """Called after backward, before clipping and the optimiser step."""

    def after_step(self, step: int) -> None:
        """Called after the optimiser step (e.g. an EMA update)."""

    def final_backbones(self, content: dict[str, Any]) -> dict[str, Any]:
        """The backbone-file dict written to final.pt, given the trained one (e.g. mixed with the initial weights)."""
        return content

    def state_dict(self) -> dict[str, Any]:
        """Extra state to checkpoint besides the backbones (heads, teacher, centre ...)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    def synchronise(self) -> None:
        """Make state that processes update independently equal before it is saved."""


def check_config(config: Mapping[str, Any], objective: Objective) -> None:
    """Raise ConfigError on unknown keys, missing sections or bad values of a training config."""
    allowed = TOP_KEYS + ((objective.section,) if objective.section else ())
    check_keys(config, allowed, "config")
    for name in ("data", "model", "optim", "train"):
        if not isinstance(config.get(name), dict):
            raise ConfigError(f"config needs a '{name}' section")
    check_keys(config["optim"], OPTIM_KEYS, "optim")
    check_keys(config["train"], TRAIN_KEYS, "train")
    if config["optim"].get("name", "sgd") not in ("sgd", "adamw"):
        raise ConfigError(f"optim.name must be sgd or adamw, got {config['optim'].get('name')!r}")
    if "seed" in config:
        check_values(config, {"seed": Value(int, 0)}, "config")
    for name, schema in VALUE_SCHEMAS.items():
        check_values(config[name], schema, name)
    if "epochs" not in config["train"]:
        raise ConfigError("config needs train.epochs")
    average_last, keep = int(config["train"].get("average_last", 0)), int(config["train"].get("keep_checkpoints", 3))
    if average_last > 1 and 0 < keep < average_last:
        raise ConfigError(f"train.average_last ({average_last}) needs train.keep_checkpoints at least as large "
                          f"(or 0, all kept), got {keep}")
    if config["optim"].get("clip_mode", "global") not in CLIP_MODES:
        raise ConfigError(f"optim.clip_mode must be one of {', '.join(CLIP_MODES)}, "
                          f"got {config['optim'].get('clip_mode')!r}")


def training_differences(saved: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """:func:`config_differences` of two training configs, each model section with its defaults filled
    in (a section that left keys to the defaults, or to the backbone it started from, trains the same)."""
    def comparable(cfg):
        model = cfg.get("model")
        if isinstance(model, dict) and "name" in model:
            with contextlib.suppress(ConfigError):
                return {**cfg, "model": full_config(model)}
        return cfg
    return config_differences(comparable(saved), comparable(config))


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``["key.sub: <old> -> <new>", ...]``: the keys whose values differ between two configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in new:
                out.append(f"{path}: {old[key]!r} -> (absent)")
            elif key not in old:
                out.append(f"{path}: (absent) -> {new[key]!r}")
            else:
                out += config_differences(old[key], new[key], path)
        return out
    return [] if old == new else [f"{prefix or 'config'}: {old!r} -> {new!r}"]


def check_finished_experiment(config: Mapping[str, Any], exp_dir: PathLike) -> bool:
    """True when ``exp_dir`` holds a finished training of this very config; ConfigError naming what
    differs when it was trained with another one (changed --config or overrides); False when it is
    not finished."""
    if not os.path.isfile(os.path.join(exp_dir, ".done")):
        return False
    saved_path = os.path.join(exp_dir, "config.yaml")
    if os.path.isfile(saved_path):
        differ = training_differences(load_yaml(saved_path), config)
        if differ:
            raise ConfigError(finished_message(exp_dir, differ))
    return True


def finished_message(exp_dir: PathLike, differ: list[str]) -> str:
    """Why a finished training is not re-run with a changed config, and what to do instead."""
    shown = "; ".join(differ[:6]) + (f"; and {len(differ) - 6} more" if len(differ) > 6 else "")
    return (f"{exp_dir} is a finished training of another config (was -> now: {shown}); nothing was changed. "
            f"Train this config into a new experiment dir, or retrain {exp_dir} in place with "
            f"steps/train.sh --retrain true (or remove it first)")


def build_optimizer(groups: list[dict[str, Any]], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """SGD or AdamW (``optim.name``) over parameter ``groups``; the trainer sets lr and weight decay per step."""
    name = cfg.get("name", "sgd")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=0.0, momentum=float(cfg.get("momentum", 0.9)),
                               nesterov=bool(cfg.get("nesterov", False)))
    return torch.optim.AdamW(groups, lr=0.0, betas=tuple(cfg.get("betas", (0.9, 0.999))),
                             eps=float(cfg.get("eps", 1e-8)), weight_decay=0.0)


@torch.no_grad()
def clip_gradients(parameters: Iterable[torch.Tensor], max_norm: float, mode: str = "global") -> torch.Tensor:
    """Clip gradients and return the global gradient norm before clipping.

    ``global``: one scale for all (torch's clip_grad_norm_); ``per_param``:
    each tensor's gradient scaled to norm at most ``max_norm`` on its own, as
    DINO, WeSpeaker and Cho et al. do. ``max_norm`` <= 0: norm only.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norms = torch._foreach_norm(grads)
    total = torch.linalg.vector_norm(torch.stack(norms))
    if max_norm > 0:
        if mode == "per_param":
            scales = [torch.clamp(max_norm / (n + 1e-6), max=1.0) for n in norms]
            torch._foreach_mul_(grads, scales)
        else:
            torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total


def to_device(batch: Any, device: torch.device) -> Any:
    """Tensors of a (nested dict) batch moved to ``device``."""
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    return batch


class Trainer:
    """Runs an :class:`Objective` on a data dir into an experiment dir; resumable."""

    def __init__(self, objective: Objective, config: dict[str, Any], data_dir: PathLike, exp_dir: PathLike,
                 device: str = "auto"):
        check_config(config, objective)
        self.objective, self.config = objective, config
        self.data_dir, self.exp_dir = data_dir, exp_dir
        self.requested_device = device
        self.ckpt_dir = os.path.join(exp_dir, "checkpoints")
        self.done_path = os.path.join(exp_dir, ".done")
        self.final_path = os.path.join(exp_dir, "final.pt")

    # -- set-up ------------------------------------------------------------
    def _prepare_exp_dir(self):
        """Save the merged config; refuse to resume an experiment started with another one."""
        config_path = os.path.join(self.exp_dir, "config.yaml")
        if (os.path.isfile(config_path) and ckpt.find_latest(self.ckpt_dir)
                and training_differences(load_yaml(config_path), self.config)):
            raise ConfigError(f"{config_path}: differs from this run's config and checkpoints exist; "
                              "use a new experiment dir or the same config to resume")
        if self.dist.is_main:
            os.makedirs(self.ckpt_dir, exist_ok=True)
            ckpt.remove_stale_temporaries(self.ckpt_dir)
            save_config(self.config, config_path)

    def _build(self):
        cfg = self.config
        self.seed = int(cfg.get("seed", 0))
        threads = int(cfg["train"].get("threads", 0))
        if threads > 0:  # on a busy CPU, fewer intra-op threads than cores avoids spin-wait contention
            torch.set_num_threads(threads)
        # Same seed on every process: identical initial weights, so DDP's broadcast changes nothing.
        torch.manual_seed(self.seed)
        self.dataset = build_training_source(self.data_dir, cfg["data"], self.seed)
        # data.source wav: raw-audio crops become (augmented) fbank on the device, per process.
        self.frontend = build_frontend(cfg["data"], self.dataset, self.seed, self.dist.rank, self.device)
        feat_dim = self.dataset.feat_dim()
        if feat_dim != cfg["model"].get("feat_dim", 80):
            raise ConfigError(f"{self.dataset.source_path}: {feat_dim}-dim features but model.feat_dim is "
                              f"{cfg['model'].get('feat_dim', 80)}")
        self.loader, self.sampler = build_loader(self.dataset, cfg["data"], self.seed, self.dist.rank,
                                                 self.dist.world_size, pin_memory=self.device.type == "cuda",
                                                 class_labels=self.objective.sampling_labels(cfg))
        self.augmenter = BatchAugmenter(cfg["data"].get("specaug"), cfg["data"].get("channel"), self.seed,
                                        self.dist.rank)
        self.steps_per_epoch = self.sampler.num_batches
        self.epochs = int(cfg["train"]["epochs"])
        self.total_steps = self.epochs * self.steps_per_epoch
        self.objective.build(cfg, self.steps_per_epoch, self.total_steps, self.device)
        module = self.objective.trainable()
        self.groups = self.objective.param_groups(module)
        self.optimizer = build_optimizer(self.groups, cfg["optim"])
        optim = cfg["optim"]
        self.lr = build_schedule(optim.get("lr", 0.1), self.steps_per_epoch, self.total_steps, "optim.lr")
        self.lr_scale = lr_scale(optim, int(cfg["data"]["batch_size"]) * self.dist.world_size)
        self.wd = build_schedule(optim.get("weight_decay", 0.0), self.steps_per_epoch, self.total_steps,
                                 "optim.weight_decay")
        self.clip_grad = float(optim.get("clip_grad", 0.0))
        self.clip_mode = optim.get("clip_mode", "global")
        if self.dist.distributed and cfg["train"].get("sync_batchnorm", False):
            module = sync_batchnorm(module, self.device)
        self.model = module
        if self.dist.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(module, device_ids=device_ids)
        self.amp = bool(cfg["train"].get("amp", False)) and self.device.type == "cuda"
        columns = ["step", "epoch", "loss", "lr", "wd", *self.objective.schedule_names,
                   *self.objective.metric_names, "grad_norm", "sec_per_step", "data_sec_per_step"]
        self.metrics = MetricsLog(os.path.join(self.exp_dir, "metrics.tsv"), columns)

    # -- checkpoints ---------------------------------------------------------
    def _gather_rng(self):
        state = ckpt.capture_rng_state()
        if not self.dist.distributed:
            return [state]
        states = [None] * self.dist.world_size
        dist.all_gather_object(states, state)
        return states

    def save_checkpoint(self, step: int) -> None:
        """Write the checkpoint of ``step`` (main process) and prune old ones."""
        self.objective.synchronise()
        rng_states = self._gather_rng()
        if not self.dist.is_main:
            return
        backbones, default = self.objective.backbones()
        extra = {"objective": self.objective.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "step": step, "epoch": step // self.steps_per_epoch, "steps_per_epoch": self.steps_per_epoch,
                 "world_size": self.dist.world_size, "rng": rng_states, "config": self.config}
        path = os.path.join(self.ckpt_dir, ckpt.checkpoint_name(step // self.steps_per_epoch, step))
        save_backbones(path, backbones, default, extra)
        ckpt.prune_checkpoints(self.ckpt_dir, int(self.config["train"].get("keep_checkpoints", 3)))
        log.info("saved %s", path)

    def resume(self) -> int:
        """Load the latest checkpoint if any; return the step to continue from."""
        path, state = ckpt.load_latest_good(self.ckpt_dir, RESUME_KEYS, map_location=self.device)
        if path is None:
            return 0
        if state["steps_per_epoch"] != self.steps_per_epoch:
            raise ConfigError(f"{path}: saved with {state['steps_per_epoch']} steps per epoch, now "
                              f"{self.steps_per_epoch} (different data, batch size or number of processes)")
        backbones, _ = self.objective.backbones()
        for name, module in backbones.items():
            module.load_state_dict(state["backbones"][name]["state_dict"])
        self.objective.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        rng_states = state["rng"]
        ckpt.restore_rng_state(rng_states[self.dist.rank % len(rng_states)])
        log.info("resumed from %s (step %d)", path, state["step"])
        return int(state["step"])

    def export(self) -> None:
        """Write the backbones of the finished training to final.pt: the final weights, or with
        ``train.average_last`` N > 1 their mean over the last N checkpoints (the final one included),
        which smooths the end of a short fine-tuning on noisy labels (WeSpeaker averages 10 epochs)."""
        average_last = int(self.config["train"].get("average_last", 0))
        if average_last > 1:
            paths = [path for _, path in ckpt.list_checkpoints(self.ckpt_dir)][-average_last:]
            if len(paths) < average_last:
                log.warning("train.average_last %d: only %d checkpoint(s) saved; averaging those", average_last,
                            len(paths))
            content = ckpt.average_backbones(paths)
            log.info("final.pt: the mean of %s", ", ".join(content["averaged_from"]))
        else:
            content = backbone_file_content(*self.objective.backbones())
        write_backbone_file(self.final_path, {**self.objective.final_backbones(content), "config": self.config,
                                              "step": self.total_steps, "epoch": self.epochs})

    # -- the loop ------------------------------------------------------------
    def _set_schedules(self, step):
        lr, wd = self.lr(step) * self.lr_scale * self.objective.lr_factor(step), self.wd(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            group["weight_decay"] = wd if group.get("apply_wd", True) else 0.0
        return lr, wd

    def _train_step(self, batch, step):
        lr, wd = self._set_schedules(step)
        batch = to_device(batch, self.device)
        if self.frontend is not None:
            batch["crops"] = self.frontend(batch["crops"], step)
        batch["crops"] = self.augmenter(batch["crops"], step)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()
        with autocast:
            loss, stats = self.objective.compute_loss(self.model, batch, step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.objective.after_backward(step)
        stats["grad_norm"] = clip_gradients(list(self.objective.trainable().parameters()), self.clip_grad,
                                            self.clip_mode)
        self.optimizer.step()
        self.objective.after_step(step)
        return loss.detach(), stats, lr, wd

    def _check_finite(self, loss_sum, step):
        """Stop (every process alike) once a loss since the last check is NaN or infinite."""
        total = loss_sum.detach().float().reshape(1).clone()
        if self.dist.distributed:
            dist.all_reduce(total)
        if not torch.isfinite(total).all():
            raise FloatingPointError(f"the loss became {total.item()} by step {step}; stopping without saving "
                                     "(lower optim.lr or optim.clip_grad, or resume from the last checkpoint)")

    def _log_row(self, step, sums, count, lr, wd, elapsed, data_time):
        names = ["loss", *self.objective.metric_names, "grad_norm"]
        values = torch.stack([sums[n] for n in names]).float() / count
        if self.dist.distributed:
            dist.all_reduce(values)
            values /= self.dist.world_size
        row = {"step": step, "epoch": round(step / self.steps_per_epoch, 3), "lr": lr, "wd": wd}
        row.update(self.objective.schedule_values(step - 1))
        row.update({n: float(v) for n, v in zip(names, values.tolist(), strict=True)})
        row.update({"sec_per_step": elapsed / count, "data_sec_per_step": data_time / count})
        if self.dist.is_main:
            self.metrics.append(row)
            log.info(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))

    def run(self, max_steps: int | None = None) -> int | None:
        """Train to the end (or stop after ``max_steps`` steps in total); returns the step reached."""
        self.dist, self.device = init_distributed(self.requested_device)
        try:
            if self._finished():  # checked before locking too, so a finished dir is not even touched
                return None
            with contextlib.ExitStack() as held:
                if self.dist.is_main:
                    held.enter_context(dir_lock(self.exp_dir, "another training"))
                return None if self._finished() else self._run_locked(max_steps)
        finally:
            cleanup_distributed()

    def _finished(self):
        """True (and say so) when the experiment dir holds a finished training of this config; a finished
        training of another config (changed --config or overrides) is a ConfigError naming what differs."""
        if not check_finished_experiment(self.config, self.exp_dir):
            return False
        log.info("%s exists: training already finished with this config, nothing to do", self.done_path)
        return True

    def _run_locked(self, max_steps):
        self._prepare_exp_dir()
        setup_logging(os.path.join(self.exp_dir, "log", "train.log") if self.dist.is_main else None,
                      rank=self.dist.rank)
        self._build()
        step = self.resume()
        if self.dist.is_main:
            self.metrics.trim(step)
        log.info("%d training utterances (%d augmented copies), %d process(es), %d steps/epoch, %d epochs, "
                 "device %s", len(self.dataset), self.dataset.num_copies, self.dist.world_size,
                 self.steps_per_epoch, self.epochs, self.device)
        step = self._loop(step, max_steps)
        if step < self.total_steps:
            return step
        if self.dist.is_main:
            self.export()
            plot_metrics(self.metrics.path, os.path.join(self.exp_dir, "loss.png"),
                         ["loss", *self.objective.metric_names, "grad_norm", "lr"])
            with open(self.done_path, "w") as f:
                f.write(f"step {step}\n")
            log.info("training finished: %s", self.final_path)
        if self.dist.distributed:
            # The other processes leave once final.pt is written, so all tear the process group down
            # together (one leaving mid-export has aborted at exit under load).
            dist.barrier()
        return step

    def _loop(self, step, max_steps):
        cfg = self.config["train"]
        log_every = max(int(cfg.get("log_every", 10)), 1)
        ckpt_every = int(cfg.get("ckpt_every_steps", 0))
        stop = self.total_steps if max_steps is None else min(max_steps, self.total_steps)
        last_saved = step
        progress = tqdm(total=self.total_steps, initial=step, disable=not self.dist.is_main, unit="step",
                        mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True)
        self.objective.trainable().train()
        sums, count, elapsed, data_time = {}, 0, 0.0, 0.0
        read_run, skipped_run, unreadable = 0, 0, set()  # this run's reads, failed reads, unreadable items
        while step < stop:
            skipped_epoch = 0
            epoch = step // self.steps_per_epoch
            self.sampler.set_epoch(epoch, step % self.steps_per_epoch)
            tick = time.perf_counter()
            for batch in self.loader:
                fetched = time.perf_counter()
                skipped = batch.pop("skipped")
                read_run += len(skipped)
                if skipped.any():  # item i read utterance index[i] after skipped[i] unreadable ones before it
                    skipped_epoch += int(skipped.sum())
                    for current, passed in zip(batch["index"].tolist(), skipped.tolist(), strict=True):
                        unreadable.update((current - k) % len(self.dataset) for k in range(1, passed + 1))
                loss, stats, lr, wd = self._train_step(batch, step)
                step += 1
                for name, value in [("loss", loss), *stats.items()]:
                    sums[name] = sums.get(name, 0.0) + value.detach()
                count += 1
                now = time.perf_counter()
                elapsed += now - tick
                data_time += fetched - tick
                progress.update(1)
                end_of_epoch = step % self.steps_per_epoch == 0
                log_now = step % log_every == 0 or step == stop
                save_now = step != last_saved and (end_of_epoch or step == stop
                                                   or (ckpt_every > 0 and step % ckpt_every == 0))
                if log_now or save_now:
                    # Checked here, not every step, to spare a device sync per step; never saves a NaN model.
                    self._check_finite(sums["loss"], step)
                if log_now:
                    self._log_row(step, sums, count, lr, wd, elapsed, data_time)
                    progress.set_postfix(loss=f"{float(sums['loss']) / count:.3f}")
                    sums, count, elapsed, data_time = {}, 0, 0.0, 0.0
                if save_now:
                    self.save_checkpoint(step)
                    last_saved = step
                if step >= stop or end_of_epoch:
                    break
                tick = time.perf_counter()
            skipped_epoch = self._count_all_processes(skipped_epoch)
            skipped_run += skipped_epoch
            if skipped_epoch:
                log.warning("epoch %d%s: skipped %d unreadable utterances (named in the warnings above)",
                            epoch + 1, "" if step % self.steps_per_epoch == 0 else " (part)", skipped_epoch)
        progress.close()
        self._log_reads(self._count_all_processes(read_run), skipped_run, unreadable)
        return step

    def _log_reads(self, done, failed, unreadable):
        """Kaldi's "Done N, failed M" of this run's reads of training utterances (all processes)."""
        if self.dist.distributed:
            gathered = [None] * self.dist.world_size
            dist.all_gather_object(gathered, sorted(unreadable))
            unreadable = set().union(*gathered)
        if not failed:
            log.info("Done %d utterance reads, failed 0", done)
            return
        names = [self.dataset.utts[i] for i in sorted(unreadable)]
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        log.warning("Done %d utterance reads, failed %d: %d utterance(s) of %s could not be read and were "
                    "passed over (%s; each named with its reason in the warnings above)",
                    done, failed, len(names), self.dataset.source_path, shown)

    def _count_all_processes(self, count):
        if not self.dist.distributed:
            return count
        total = torch.tensor([count], dtype=torch.int64, device=self.device)
        dist.all_reduce(total)
        return int(total.item())
