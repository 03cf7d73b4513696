"""The generic training loop around an :class:`~pyspk.train.objective.Objective`.

:class:`Trainer` runs a method on a data dir into an experiment dir (pyspk.train.experiment):
data loading, the optimiser and schedules from YAML (pyspk.train.optim), DDP, gradient
clipping, logging, checkpoints, exact resume and the final export. The config it is given
was checked before any work (pyspk.train.schema); it reads the values as they are.
"""

import contextlib
import logging
import os
import sys
import time
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from pyspk.config import ConfigError, save_config
from pyspk.device import cleanup_distributed, init_distributed
from pyspk.fileutil import PathLike, dir_lock
from pyspk.logutil import setup_logging
from pyspk.models import backbone_file_content, save_backbones, write_backbone_file
from pyspk.train import checkpoint as ckpt
from pyspk.train.augment import BatchAugmenter
from pyspk.train.data import build_loader
from pyspk.train.experiment import check_finished_experiment, check_resumable
from pyspk.train.metrics import MetricsLog, plot_metrics
from pyspk.train.objective import Objective
from pyspk.train.online_aug import build_frontend
from pyspk.train.optim import build_optimizer, clip_gradients, lr_scale
from pyspk.train.schedules import build_schedule
from pyspk.train.schema import check_config
from pyspk.train.wav_data import build_training_source

log = logging.getLogger(__name__)

# What resume() reads from a checkpoint.
RESUME_KEYS = ("steps_per_epoch", "backbones", "objective", "optimizer", "rng", "step")


def sync_batchnorm(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` with BatchNorm statistics computed over the whole global batch under DDP (train.sync_batchnorm).

    torch synchronises BatchNorm only on CUDA (NCCL); on the CPU (gloo) each process keeps its own
    statistics, and the log says so.
    """
    if device.type != "cuda":
        log.warning("train.sync_batchnorm: needs CUDA; BatchNorm stays per process on %s", device)
        return module
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)


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
        check_resumable(self.config, self.exp_dir)
        if self.dist.is_main:
            os.makedirs(self.ckpt_dir, exist_ok=True)
            ckpt.remove_stale_temporaries(self.ckpt_dir)
            save_config(self.config, os.path.join(self.exp_dir, "config.yaml"))

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
