"""MeMo: multi-head multi-mode self-distillation (Jin, Tu and Mak, Interspeech 2024).

DINO-style distillation between two (or more) different backbone
architectures held side by side. The teacher is an EMA of the student, one
per architecture. Every teacher architecture distils into

* its own student architecture (self-distillation), through the *self-heads*:
  teacher self-head output -> student self-head output;
* every other student architecture (cross-distillation), through the
  *cross-heads*: teacher cross-head output -> other student's cross-head output.

Each head only ever takes part in its own mode, so the output mismatch
between architectures is absorbed by the cross-heads and does not disturb
self-distillation. One DINO centre is kept per teacher head.

An embedding-level contrastive loss (NT-Xent over the crops of each student
architecture's backbone embeddings) helps early in training only; it is
stopped dynamically when its windowed mean stops improving (or at a
configured epoch) while distillation goes on. The stop state is all-reduced
every step, identical on all processes, and part of the checkpoint.
"""

import copy
import logging
import re

import torch
import torch.distributed as dist
from torch import nn

from pyspk.config import ConfigError, Map, Value, check_section, keys_map, nullable
from pyspk.device import average_buffers, distributed_active
from pyspk.models import build_model
from pyspk.ssl.contrastive import crop_major
from pyspk.ssl.dino import (
    DISTILLATION_KEYS,
    DINOHead,
    DINOLoss,
    build_collapse_monitor,
    drop_last_layer_grads,
    ema_update,
    embedding_spread,
    freeze_last_layer_steps,
    head_options,
    multi_crop_counts,
    regulariser_loss,
    regulariser_options,
)
from pyspk.ssl.ntxent import CONTRASTIVE_TERM_SECTION, contrastive_options, nt_xent
from pyspk.train.objective import Objective
from pyspk.train.schedules import build_ema_momentum, build_schedule

log = logging.getLogger(__name__)

MEMO_SECTION = Map({**DISTILLATION_KEYS, "self_weight": Value(float, 0), "cross_weight": Value(float, 0),
                    "contrastive": nullable(CONTRASTIVE_TERM_SECTION)})
MODEL_SECTION = keys_map(("feat_dim", "archs"))  # each arch is checked by pyspk.models
MODES = ("self", "cross")
HEAD_OUTPUT = {"self": 1, "cross": 2}  # position of each mode's head output in MultiArchNet's tuples
ARCH_NAME = re.compile(r"^[A-Za-z0-9_]+$")


class MultiArchNet(nn.Module):
    """Backbones of several architectures, each with a self-head and a cross-head.

    ``forward(groups)`` -> ``{arch: (embeddings, self_out, cross_out)}`` with
    the crop groups concatenated in order (one DDP call for everything).
    """

    def __init__(self, backbones, head_cfg):
        super().__init__()
        self.backbones = nn.ModuleDict(backbones)
        self.heads = nn.ModuleDict({mode: nn.ModuleDict({arch: DINOHead(b.embed_dim, **head_cfg)
                                                         for arch, b in backbones.items()})
                                    for mode in MODES})

    def forward(self, groups):
        out = {}
        for arch, backbone in self.backbones.items():
            embeddings = torch.cat([backbone(g) for g in groups])
            out[arch] = (embeddings, self.heads["self"][arch](embeddings), self.heads["cross"][arch](embeddings))
        return out


def distillation_pairs(archs):
    """``[(mode, teacher_arch, student_arch)]``: self pairs on the diagonal, cross pairs off it."""
    return [("self", a, a) for a in archs] + [("cross", t, s) for t in archs for s in archs if t != s]


def arch_configs(model_cfg):
    """``model: {feat_dim, archs: {name: backbone config}}`` -> ``{name: backbone config}`` (feat_dim filled in)."""
    check_section(model_cfg, MODEL_SECTION, "model (memo)")
    archs = model_cfg.get("archs")
    if not isinstance(archs, dict) or len(archs) < 2:
        raise ConfigError("memo needs model.archs with at least 2 architectures, e.g. "
                          "{ecapa: {name: ecapa, ...}, resnet: {name: resnet_thin, ...}}")
    feat_dim = model_cfg.get("feat_dim", 80)
    out = {}
    for name, cfg in archs.items():
        if not isinstance(name, str) or not ARCH_NAME.match(name):
            raise ConfigError(f"model.archs: name {name!r} must be letters, digits and _ only")
        if not isinstance(cfg, dict):
            raise ConfigError(f"model.archs.{name} must be a backbone config mapping")
        if cfg.get("feat_dim", feat_dim) != feat_dim:
            raise ConfigError(f"model.archs.{name}.feat_dim ({cfg['feat_dim']}) differs from model.feat_dim "
                              f"({feat_dim})")
        out[name] = {**cfg, "feat_dim": feat_dim}
    return out


class MeMoObjective(Objective):
    """MeMo as an :class:`~pyspk.train.objective.Objective` for the generic trainer.

    ``model: {feat_dim, archs: {name: backbone config}}``. Config section
    ``memo``: DINO's ``head``, ``student_temp``, ``teacher_temp``,
    ``momentum`` (a schedule or ``{lag_fraction}``), ``center_momentum``,
    ``freeze_last_layer_epochs`` or ``freeze_last_layer_fraction`` (of all
    steps; wins when set), ``regularisers: {diversity, redundancy, cosine}``
    (RDINO / hyperion weights on each architecture's embeddings, 0: off),
    ``collapse`` (one :class:`~pyspk.ssl.dino.CollapseMonitor` per teacher
    head: self and cross of every architecture); ``self_weight`` /
    ``cross_weight`` (mean self / cross pair losses are weighted by them);
    ``contrastive: {weight, temperature, gather_negatives,
    stop: {window_steps, patience, min_delta, max_epochs}}`` (weight 0: off).
    Crops as DINO: ``global`` (teachers and students) and optional ``local``.
    Backbones exported: ``teacher_<arch>`` (the first is the default) and
    ``student_<arch>``.
    """

    section = "memo"
    declaration = MEMO_SECTION
    schedule_names = ("momentum", "teacher_temp")

    def build(self, config, steps_per_epoch, total_steps, device):
        cfg = config.get(self.section)
        if not isinstance(cfg, dict):
            raise ConfigError("config needs a 'memo' section")
        check_section(cfg, self.declaration, "memo")
        self.n_global, self.n_views = multi_crop_counts(config["data"]["crops"], "memo")
        self.archs = list(arch_configs(config["model"]))
        head_cfg = head_options(cfg.get("head"))
        backbones = {name: build_model(c) for name, c in arch_configs(config["model"]).items()}
        self.student = MultiArchNet(backbones, head_cfg).to(device)
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        center_momentum = float(cfg.get("center_momentum", 0.9))
        self.losses = nn.ModuleDict({f"{mode}_{arch}": DINOLoss(head_cfg["out_dim"], self.n_global, center_momentum)
                                     for mode in MODES for arch in self.archs}).to(device)
        self.pairs = distillation_pairs(self.archs)
        self.pairs_per_mode = {mode: sum(p[0] == mode for p in self.pairs) for mode in MODES}
        self.weights = {mode: float(cfg.get(f"{mode}_weight", 1.0)) for mode in MODES}
        if min(self.weights.values()) < 0:
            raise ConfigError("memo.self_weight and memo.cross_weight must not be negative")
        self.student_temp = float(cfg.get("student_temp", 0.1))
        self.teacher_temp = build_schedule(cfg.get("teacher_temp", 0.04), steps_per_epoch, total_steps,
                                           "memo.teacher_temp")
        self.momentum = build_ema_momentum(cfg.get("momentum"), steps_per_epoch, total_steps, "memo.momentum")
        self.freeze_last_layer_steps = freeze_last_layer_steps(cfg, steps_per_epoch, total_steps)
        self.regularisers = regulariser_options(cfg.get("regularisers"), "memo")
        self._build_contrastive(cfg.get("contrastive"), steps_per_epoch)
        # One collapse monitor per teacher head (each mode of each architecture), on its target entropy.
        self.heads_monitored = [f"{mode}_{arch}" for mode in MODES for arch in self.archs]
        self.monitors = {head: build_collapse_monitor(cfg.get("collapse"), head_cfg["out_dim"], "memo", head)
                         for head in self.heads_monitored}
        self.metric_names = (*(self.pair_name(*p) for p in self.pairs),
                             *(f"entropy_{head}" for head in self.heads_monitored), "regulariser",
                             "contrastive", "contrastive_on", *(f"emb_std_{a}" for a in self.archs))

    def _build_contrastive(self, cfg, steps_per_epoch):
        (self.contrastive_weight, self.contrastive_temp, self.gather,
         self.stop) = contrastive_options(cfg, steps_per_epoch, "memo.contrastive")
        self._contrastive_value = None

    @staticmethod
    def pair_name(mode, teacher, student):
        return f"self_{teacher}" if mode == "self" else f"cross_{teacher}_to_{student}"

    def trainable(self):
        return self.student

    def backbones(self):
        modules = {f"teacher_{a}": self.teacher.backbones[a] for a in self.archs}
        modules.update({f"student_{a}": self.student.backbones[a] for a in self.archs})
        return modules, f"teacher_{self.archs[0]}"

    def schedule_values(self, step):
        return {"momentum": self.momentum(step), "teacher_temp": self.teacher_temp(step)}

    def pair_losses(self, student_out, teacher_out, step, entropies=None):
        """``{pair name: DINO loss}``: each pair between the outputs of its own mode's heads only.

        ``entropies``, a dict if given, receives each teacher head's target entropy (``<mode>_<arch>``).
        """
        losses = {}
        for mode, t, s in self.pairs:
            out = HEAD_OUTPUT[mode]
            loss, stats = self.losses[f"{mode}_{t}"](student_out[s][out], teacher_out[t][out],
                                                     self.student_temp, self.teacher_temp(step))
            losses[self.pair_name(mode, t, s)] = loss
            if entropies is not None:
                entropies[f"{mode}_{t}"] = stats["teacher_entropy"]
        return losses

    def compute_loss(self, model, batch, step):
        crops = batch["crops"]
        batch_size = crops["global"].shape[0]
        groups, _ = crop_major(crops)
        with torch.no_grad():
            self.teacher.train()
            teacher_out = self.teacher(groups[:1])
        student_out = model(groups)
        entropies = {}
        pair_losses = self.pair_losses(student_out, teacher_out, step, entropies)
        # Each mode's pair losses averaged, then weighted.
        loss = sum(self.weights[mode] * pair_losses[self.pair_name(mode, t, s)] / self.pairs_per_mode[mode]
                   for mode, t, s in self.pairs)
        for mode in MODES:
            for arch in self.archs:
                self.losses[f"{mode}_{arch}"].update_center(teacher_out[arch][HEAD_OUTPUT[mode]])
        stats = {name: value.detach() for name, value in pair_losses.items()}
        stats.update({f"entropy_{head}": entropies[head] for head in self.heads_monitored})
        zero = torch.zeros((), device=loss.device)
        # RDINO / hyperion terms on each architecture's own embeddings, averaged as the contrastive term.
        regulariser = sum(regulariser_loss(self.regularisers, student_out[a][0], teacher_out[a][0], self.n_views,
                                           self.n_global) for a in self.archs) / len(self.archs)
        loss = loss + regulariser
        stats["regulariser"] = regulariser.detach()
        if self.stop.active(step):
            contrastive = sum(nt_xent(student_out[a][0], self.n_views, self.contrastive_temp, self.gather)[0]
                              for a in self.archs) / len(self.archs)
            loss = loss + self.contrastive_weight * contrastive
            self._contrastive_value = contrastive.detach()
            stats.update(contrastive=contrastive.detach(), contrastive_on=torch.ones((), device=loss.device))
        else:
            self._contrastive_value = None
            stats.update(contrastive=zero, contrastive_on=zero)
        with torch.no_grad():
            for arch in self.archs:
                stats[f"emb_std_{arch}"] = embedding_spread(student_out[arch][0][:batch_size])
        for mode in MODES:
            for arch in self.archs:
                head = f"{mode}_{arch}"
                warning = self.monitors[head].update(step, stats[f"entropy_{head}"], stats[f"emb_std_{arch}"])
                if warning:
                    log.warning("step %d: %s", step + 1, warning)
        return loss, stats

    def after_backward(self, step):
        if step < self.freeze_last_layer_steps:
            drop_last_layer_grads(head for mode in MODES for head in self.student.heads[mode].values())

    def after_step(self, step):
        ema_update(self.teacher, self.student, self.momentum(step))
        if self._contrastive_value is not None:
            reason = self.stop.update_averaged(step, self._contrastive_value)
            if reason:
                log.info("memo: contrastive loss stopped at step %d: %s; distillation goes on",
                         self.stop.stopped_step, reason)

    def state_dict(self):
        return {"student_heads": self.student.heads.state_dict(), "teacher_heads": self.teacher.heads.state_dict(),
                "losses": self.losses.state_dict(), "contrastive_stop": self.stop.state_dict()}

    def load_state_dict(self, state):
        self.student.heads.load_state_dict(state["student_heads"])
        self.teacher.heads.load_state_dict(state["teacher_heads"])
        self.losses.load_state_dict(state["losses"])
        self.stop.load_state_dict(state["contrastive_stop"])
        if self.stop.stopped_step is not None and self.contrastive_weight > 0:
            log.info("memo: contrastive loss was stopped at step %d", self.stop.stopped_step)

    def synchronise(self):
        """Average the teachers' BN statistics; take the stop state of process 0 (already equal by design)."""
        if not distributed_active():
            return
        average_buffers(self.teacher)
        state = [self.stop.state_dict()]
        dist.broadcast_object_list(state, src=0)
        self.stop.load_state_dict(state[0])


def rounds_start(memo_config, start):
    """The backbone that pseudo-label rounds after MeMo start from, given ``start``.

    ``start``: ``fused`` (round 1 clusters the teachers' fused embeddings; the classifier starts
    from the default teacher, the first architecture) or an architecture name of
    ``model.archs`` (that teacher's embeddings and weights). Returns ``teacher_<arch>``;
    ConfigError when ``start`` is neither. (Whether the classifier's model fits that backbone
    is the classifier's own check: pyspk.bin.train --check-only --init-backbone.)
    """
    archs = list(arch_configs(memo_config.get("model") or {}))
    if start != "fused" and start not in archs:
        raise ConfigError(f"--memo-start must be fused or one of the MeMo config's architectures "
                          f"({', '.join(archs)}), got '{start}'")
    return f"teacher_{archs[0] if start == 'fused' else start}"
