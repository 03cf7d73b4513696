"""DINO for speaker embeddings (Caron et al. 2021; Cho et al. 2022 for speech).

The student (backbone + projection head) sees all crops, the teacher (an EMA
of the student, never updated by gradients) sees the global crops only. The
loss is the cross-entropy between the teacher's centred, sharpened softmax and
the student's softmax over every (teacher crop, student crop) pair of
different crops.

Optional terms that make a short run learn early and not collapse, each off
(weight 0) unless configured: RDINO's diversity and redundancy-elimination
terms on the student's embeddings (3D-Speaker), hyperion's cosine term
between teacher and student embeddings of different crops, and an
NT-Xent warm-up, on the embeddings (as MeMo's) or through a projection head,
stopped when it stops improving. The EMA momentum may be given as the share
of the run the teacher lags its student by (pyspk.train.schedules).
A collapse monitor warns when the teacher's targets stay near uniform.
"""

import copy
import logging
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from pyspk.config import ConfigError, Map, Text, Value, check_section, defaults_map, nullable
from pyspk.device import average_buffers, distributed_active
from pyspk.models import BackboneFileError, build_model, init_from_file
from pyspk.ssl.ntxent import (
    CONTRASTIVE_TERM_SECTION,
    PROJECTION_SECTION,
    ProjectionHead,
    contrastive_options,
    nt_xent,
    projection_options,
)
from pyspk.train.objective import Objective
from pyspk.train.schedules import SCHEDULE, build_ema_momentum, build_schedule, ema_momentum_spec

log = logging.getLogger(__name__)

HEAD_DEFAULTS = {"out_dim": 65536, "hidden_dim": 2048, "bottleneck_dim": 256, "nlayers": 3,
                 "use_bn": False, "norm_last_layer": True}
REGULARISER_DEFAULTS = {"diversity": 0.0, "redundancy": 0.0, "cosine": 0.0}
COLLAPSE_DEFAULTS = {"entropy_share": 0.97, "min_emb_std": 0.05, "patience_steps": 100, "check_every": 10}
HEAD_SECTION = defaults_map(HEAD_DEFAULTS)
REGULARISER_SECTION = defaults_map(REGULARISER_DEFAULTS)
COLLAPSE_SECTION = defaults_map(COLLAPSE_DEFAULTS)
# The keys of the dino section that MeMo's shares.
DISTILLATION_KEYS = {
    "head": nullable(HEAD_SECTION), "student_temp": Value(float, 0, low_open=True), "teacher_temp": SCHEDULE,
    "center_momentum": Value(float, 0, 1), "momentum": ema_momentum_spec, "freeze_last_layer_epochs": Value(float, 0),
    "freeze_last_layer_fraction": nullable(Value(float, 0, 1)), "regularisers": nullable(REGULARISER_SECTION),
    "collapse": nullable(COLLAPSE_SECTION)}
DINO_SECTION = Map({**DISTILLATION_KEYS, "init_model": nullable(Text()), "contrastive": nullable(
    Map({**CONTRASTIVE_TERM_SECTION.keys, "head": nullable(PROJECTION_SECTION)}))})


class WeightNormLinear(nn.Module):
    """Linear layer without bias whose rows are ``g * v / ||v||``.

    With ``fixed_norm`` (DINO's ``norm_last_layer``) g is fixed to 1, which
    keeps the prototypes on the unit sphere and stabilises training.
    """

    def __init__(self, in_dim, out_dim, fixed_norm=True):
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.trunc_normal_(self.weight_v, std=0.02)
        self.weight_g = None if fixed_norm else nn.Parameter(torch.ones(out_dim, 1))

    def forward(self, x):
        weight = F.normalize(self.weight_v, dim=1)
        if self.weight_g is not None:
            weight = weight * self.weight_g
        return F.linear(x, weight)


class DINOHead(nn.Module):
    """MLP (``nlayers``, GELU) to a bottleneck, L2-normalised, then the weight-normalised output layer."""

    def __init__(self, in_dim, out_dim=65536, hidden_dim=2048, bottleneck_dim=256, nlayers=3, use_bn=False,
                 norm_last_layer=True):
        super().__init__()
        layers = []
        dims = [in_dim] + [hidden_dim] * (max(nlayers, 1) - 1) + [bottleneck_dim]
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                if use_bn:
                    layers.append(nn.BatchNorm1d(dims[i + 1]))
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for module in self.mlp.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, fixed_norm=norm_last_layer)

    def forward(self, x):
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


class ProjectedDINOHead(nn.Module):
    """A DINO head with a projection MLP beside it for the NT-Xent warm-up.

    ``forward`` returns ``(dino_logits, projections)``, so both are computed in the one
    (DDP) forward; the NT-Xent then shapes the backbone through the projection, as the
    contrastive objective does, instead of on the embeddings themselves.
    """

    def __init__(self, dino_head, projection):
        super().__init__()
        self.dino = dino_head
        self.projection = projection

    @property
    def last_layer(self):
        return self.dino.last_layer

    def forward(self, x):
        return self.dino(x), self.projection(x)


class MultiCropNet(nn.Module):
    """Backbone + head over several crop sizes in one forward (one DDP call).

    ``forward(groups)`` takes a list of ``(n_i, frames_i, feat_dim)`` tensors
    and returns ``(embeddings, logits)`` concatenated in group order.
    """

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, groups):
        embeddings = torch.cat([self.backbone(g) for g in groups])
        return embeddings, self.head(embeddings)


@torch.no_grad()
def ema_update(teacher, student, momentum):
    """``teacher = momentum * teacher + (1 - momentum) * student`` over parameters."""
    t_params = [p for p in teacher.parameters()]
    s_params = [p.detach() for p in student.parameters()]
    torch._foreach_lerp_(t_params, s_params, 1.0 - momentum)


class DINOLoss(nn.Module):
    """Cross-entropy between centred/sharpened teacher and student outputs.

    Inputs are laid out crop-major: ``student_out`` is ``(n_crops * B, K)``
    with crop ``c`` of sample ``b`` at row ``c * B + b``; ``teacher_out`` is
    ``(n_global * B, K)`` and its crops are the first student crops.
    """

    def __init__(self, out_dim, n_global, center_momentum=0.9):
        super().__init__()
        self.n_global = n_global
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student_out, teacher_out, student_temp, teacher_temp):
        n_crops = student_out.shape[0] // (teacher_out.shape[0] // self.n_global)
        batch = teacher_out.shape[0] // self.n_global
        log_p_s = F.log_softmax(student_out.float() / student_temp, dim=-1).view(n_crops, batch, -1)
        p_t = F.softmax((teacher_out.float() - self.center) / teacher_temp, dim=-1).view(self.n_global, batch, -1)
        # sum over student crops v != iq of CE(p_t[iq], p_s[v]) without forming every pair.
        sum_log_p_s = log_p_s.sum(0)
        cross = -(p_t * (sum_log_p_s.unsqueeze(0) - log_p_s[: self.n_global])).sum(-1)  # (n_global, B)
        n_pairs = self.n_global * (n_crops - 1)
        loss = cross.mean(1).sum() / n_pairs
        with torch.no_grad():
            entropy = -(p_t * torch.log(p_t.clamp_min(1e-12))).sum(-1).mean()
            stats = {"teacher_entropy": entropy, "kl": loss.detach() - entropy}
        return loss, stats

    @torch.no_grad()
    def update_center(self, teacher_out):
        """EMA of the batch mean of the teacher outputs, averaged over all processes."""
        batch_center = teacher_out.float().sum(0, keepdim=True)
        count = torch.tensor([teacher_out.shape[0]], dtype=torch.float32, device=teacher_out.device)
        if distributed_active():
            dist.all_reduce(batch_center)
            dist.all_reduce(count)
        self.center.mul_(self.center_momentum).add_(batch_center / count, alpha=1.0 - self.center_momentum)


def at_least_float32(x):
    """``x`` in float32, or as it is when wider (bf16 / fp16 under autocast lose the statistics)."""
    return x if x.dtype == torch.float64 else x.float()


def diversity_loss(embeddings, eps=1e-4):
    """RDINO's diversity term: mean hinge ``relu(1 - std_d)`` of each embedding dimension over the batch."""
    std = torch.sqrt(at_least_float32(embeddings).var(0) + eps)
    return F.relu(1.0 - std).mean()


def redundancy_loss(embeddings):
    """RDINO's redundancy elimination: squared off-diagonal covariances of the embedding dimensions / dim."""
    x = at_least_float32(embeddings)
    x = x - x.mean(0)
    cov = x.t() @ x / max(x.shape[0] - 1, 1)
    off_diagonal = cov - torch.diag(torch.diagonal(cov))
    return off_diagonal.pow(2).sum() / x.shape[1]


def cross_crop_cosine_loss(student_emb, teacher_emb, n_global):
    """Hyperion's cosine term: mean ``1 - cos`` between each teacher crop and every other student crop.

    Crop-major rows as in :class:`DINOLoss`: student ``(n_crops * B, E)``, teacher ``(n_global * B, E)``.
    """
    batch = teacher_emb.shape[0] // n_global
    s = F.normalize(at_least_float32(student_emb), dim=-1).view(-1, batch, student_emb.shape[-1])
    t = F.normalize(at_least_float32(teacher_emb), dim=-1).view(n_global, batch, -1)
    cos = torch.einsum("tbe,sbe->tsb", t, s)  # (n_global, n_crops, B)
    same = torch.eye(n_global, s.shape[0], dtype=torch.bool, device=cos.device)
    return 1.0 - cos[~same].mean()


def softmax_entropy(logits, temperature):
    """Mean entropy (nats) of the rows' softmax at ``temperature``."""
    log_p = F.log_softmax(logits.float() / temperature, dim=-1)
    return -(log_p.exp() * log_p).sum(-1).mean()


class CollapseMonitor:
    """Warns when the teacher's targets stay near uniform or the embeddings stop spreading.

    A step is *collapsed* when the teacher entropy exceeds ``entropy_share``
    of its maximum ln(K) or the embedding spread falls under ``min_emb_std``.
    The run of consecutive collapsed steps is counted on the device (no sync)
    and read every ``check_every`` steps; a warning with what to change is
    logged each time the run reaches a multiple of ``patience_steps``.
    """

    def __init__(self, out_dim, entropy_share=0.97, min_emb_std=0.05, patience_steps=100, check_every=10,
                 section="dino", head=None):
        self.max_entropy = math.log(out_dim)
        self.section, self.head = section, head
        self.entropy_share, self.min_emb_std = float(entropy_share), float(min_emb_std)
        self.patience_steps, self.check_every = int(patience_steps), max(int(check_every), 1)
        self.run = None
        self.warned_multiples = 0  # patience_steps multiples of the current run already warned about
        self.warnings = 0

    def update(self, step, teacher_entropy, emb_std):
        collapsed = (teacher_entropy > self.entropy_share * self.max_entropy) | (emb_std < self.min_emb_std)
        self.run = collapsed.long() if self.run is None else (self.run + 1) * collapsed.long()
        if self.patience_steps <= 0 or (step + 1) % self.check_every:
            return None
        run = int(self.run)
        due = run >= self.patience_steps and run // self.patience_steps > self.warned_multiples
        self.warned_multiples = run // self.patience_steps
        if not due:
            return None
        self.warnings += 1
        head = f" of the {self.head} head" if self.head else ""
        return (f"possible collapse{head}: for the last {run} steps the teacher entropy was above "
                f"{self.entropy_share:.0%} of ln(K) = {self.max_entropy:.3f} nats (now {float(teacher_entropy):.3f}) "
                f"or the embedding spread under {self.min_emb_std} (now {float(emb_std):.3f}): the targets carry "
                f"no signal. Lower {self.section}.teacher_temp (0.04), shorten "
                f"{self.section}.freeze_last_layer_fraction, clip per parameter (optim.clip_mode=per_param), "
                f"or switch on {self.section}.regularisers / {self.section}.contrastive")


def multi_crop_counts(crops, section):
    """``(global crops, all crops)`` per utterance of a ``data.crops`` that DINO and MeMo can train on:
    ``global`` first (the teachers' crops), optionally ``local``, at least 1 global and 2 in all."""
    names = list(crops)
    if not names or names[0] != "global" or set(names) - {"global", "local"}:
        raise ConfigError(f"{section} needs data.crops 'global' (first) and optionally 'local', "
                          f"got {', '.join(map(str, names)) or 'none'}")
    counts = {name: int(spec.get("count", 1)) for name, spec in crops.items()}
    if counts["global"] < 1 or sum(counts.values()) < 2:
        raise ConfigError(f"{section} needs at least 1 global crop and 2 crops in all")
    return counts["global"], sum(counts.values())


def build_collapse_monitor(cfg, out_dim, section, head=None):
    """A :class:`CollapseMonitor` from a ``collapse`` config mapping (None: the defaults)."""
    collapse = dict(cfg or {})
    check_section(collapse, COLLAPSE_SECTION, f"{section}.collapse")
    return CollapseMonitor(out_dim, **{**COLLAPSE_DEFAULTS, **collapse}, section=section, head=head)


def freeze_last_layer_steps(cfg, steps_per_epoch, total_steps):
    """Steps the heads' last layers stay frozen: ``freeze_last_layer_fraction`` of the run (wins
    when set), else ``freeze_last_layer_epochs`` (default 1)."""
    if cfg.get("freeze_last_layer_fraction") is not None:
        return round(float(cfg["freeze_last_layer_fraction"]) * total_steps)
    return round(float(cfg.get("freeze_last_layer_epochs", 1)) * steps_per_epoch)


def drop_last_layer_grads(heads):
    """The last layers of ``heads`` take no update this step (the last-layer freeze)."""
    for head in heads:
        for p in head.last_layer.parameters():
            p.grad = None


def regulariser_options(cfg, section):
    """``{diversity, redundancy, cosine}`` weights of a ``regularisers`` mapping (absent: all 0)."""
    regularisers = dict(cfg or {})
    check_section(regularisers, REGULARISER_SECTION, f"{section}.regularisers")
    return {k: float(v) for k, v in {**REGULARISER_DEFAULTS, **regularisers}.items()}


def regulariser_loss(weights, embeddings, teacher_emb, n_views, n_global):
    """Weighted sum of the RDINO / hyperion terms of one backbone (a zero tensor when all are off).

    ``embeddings``: the student's, crop-major ``(n_views * B, E)``; ``teacher_emb``: ``(n_global * B, E)``.
    """
    total = torch.zeros((), device=embeddings.device)
    if weights["diversity"] > 0 or weights["redundancy"] > 0:
        # Per crop group (one crop of every utterance), so the batch statistics are over utterances.
        per_crop = embeddings.view(n_views, -1, embeddings.shape[-1])
        if weights["diversity"] > 0:
            total = total + weights["diversity"] * sum(diversity_loss(e) for e in per_crop) / n_views
        if weights["redundancy"] > 0:
            total = total + weights["redundancy"] * sum(redundancy_loss(e) for e in per_crop) / n_views
    if weights["cosine"] > 0:
        total = total + weights["cosine"] * cross_crop_cosine_loss(embeddings, teacher_emb, n_global)
    return total


def embedding_spread(embeddings):
    """Per-dimension spread of unit-length embeddings, x sqrt(dim) so ~1 when spread out."""
    unit = F.normalize(embeddings.float(), dim=-1)
    return unit.std(0).mean() * math.sqrt(unit.shape[1])


def init_backbone(backbone, path):
    """Load the default backbone of backbone file ``path`` (e.g. a contrastive model) into ``backbone``."""
    try:
        init_from_file(backbone, path)
    except (BackboneFileError, ConfigError) as e:
        raise ConfigError(f"dino.init_model: {path}: cannot start from it: {e}") from None
    log.info("dino: student and teacher start from %s", path)


def head_options(cfg):
    cfg = dict(cfg or {})
    check_section(cfg, HEAD_SECTION, "dino.head")
    return {**HEAD_DEFAULTS, **cfg}


class DINOObjective(Objective):
    """DINO as an :class:`~pyspk.train.objective.Objective` for the generic trainer.

    Config section ``dino``: ``head`` (see HEAD_DEFAULTS), ``student_temp``,
    ``teacher_temp`` / ``momentum`` (schedules, see pyspk.train.schedules),
    ``center_momentum``, ``freeze_last_layer_epochs`` or
    ``freeze_last_layer_fraction`` (of all steps; wins when set),
    ``regularisers: {diversity, redundancy, cosine}`` (weights, 0: off),
    ``contrastive: {weight, temperature, gather_negatives, stop, head}`` (MeMo's
    warm-up; weight 0 or absent: off; ``head``: a projection MLP, see
    :class:`ProjectedDINOHead`, null: on the embeddings), ``collapse`` (see CollapseMonitor),
    ``init_model`` (a backbone file whose default backbone starts student
    and teacher, e.g. a contrastive model's final.pt). The data section must
    define crops ``global`` (teacher + student) and ``local`` (student only;
    may be absent).
    """

    section = "dino"
    declaration = DINO_SECTION
    metric_names = ("teacher_entropy", "student_entropy", "kl", "emb_std", "regulariser", "contrastive")
    schedule_names = ("momentum", "teacher_temp")

    def build(self, config, steps_per_epoch, total_steps, device):
        cfg = config.get(self.section)
        if not isinstance(cfg, dict):
            raise ConfigError("config needs a 'dino' section")
        check_section(cfg, self.declaration, "dino")
        self.n_global, self.n_views = multi_crop_counts(config["data"]["crops"], "dino")
        head_cfg = head_options(cfg.get("head"))
        backbone = build_model(config["model"])
        if cfg.get("init_model"):
            init_backbone(backbone, cfg["init_model"])
        head = DINOHead(backbone.embed_dim, **head_cfg)
        contrastive_cfg = dict(cfg.get("contrastive") or {})
        projection_cfg = contrastive_cfg.pop("head", None)
        self.projected = projection_cfg is not None
        if self.projected:
            head = ProjectedDINOHead(head, ProjectionHead(
                backbone.embed_dim, **projection_options(projection_cfg, "dino.contrastive.head")))
        self.student = MultiCropNet(backbone, head).to(device)
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.loss_fn = DINOLoss(head_cfg["out_dim"], self.n_global, float(cfg.get("center_momentum", 0.9))).to(device)
        self.student_temp = float(cfg.get("student_temp", 0.1))
        self.teacher_temp = build_schedule(cfg.get("teacher_temp", {"base": 0.07, "warmup_start": 0.04,
                                                                    "warmup_epochs": 0, "kind": "constant"}),
                                           steps_per_epoch, total_steps, "dino.teacher_temp")
        self.momentum = build_ema_momentum(cfg.get("momentum"), steps_per_epoch, total_steps, "dino.momentum")
        self.freeze_last_layer_steps = freeze_last_layer_steps(cfg, steps_per_epoch, total_steps)
        self.regularisers = regulariser_options(cfg.get("regularisers"), "dino")
        (self.contrastive_weight, self.contrastive_temp, self.gather,
         self.stop) = contrastive_options(contrastive_cfg, steps_per_epoch, "dino.contrastive", default_weight=0.0)
        self._contrastive_value = None
        self.monitor = build_collapse_monitor(cfg.get("collapse"), head_cfg["out_dim"], "dino")

    def trainable(self):
        return self.student

    def backbones(self):
        return {"teacher": self.teacher.backbone, "student": self.student.backbone}, "teacher"

    def schedule_values(self, step):
        return {"momentum": self.momentum(step), "teacher_temp": self.teacher_temp(step)}

    def compute_loss(self, model, batch, step):
        crops = batch["crops"]
        batch_size = crops["global"].shape[0]
        # (B, n, T, D) -> crop-major (n * B, T, D), the layout DINOLoss expects.
        groups = [crops[name].transpose(0, 1).flatten(0, 1) for name in ("global", "local") if name in crops]
        with torch.no_grad():
            self.teacher.train()
            teacher_emb, teacher_out = self.teacher(groups[:1])
        embeddings, student_out = model(groups)
        contrastive_input = embeddings
        if self.projected:
            (teacher_out, _), (student_out, contrastive_input) = teacher_out, student_out
        loss, stats = self.loss_fn(student_out, teacher_out, self.student_temp, self.teacher_temp(step))
        self.loss_fn.update_center(teacher_out)
        regulariser = regulariser_loss(self.regularisers, embeddings, teacher_emb, self.n_views, self.n_global)
        loss = loss + regulariser
        stats["regulariser"] = regulariser.detach()
        self._contrastive_value = None
        stats["contrastive"] = torch.zeros((), device=loss.device)
        if self.contrastive_weight > 0 and self.stop.active(step):
            contrastive, _ = nt_xent(contrastive_input, self.n_views, self.contrastive_temp, self.gather)
            loss = loss + self.contrastive_weight * contrastive
            self._contrastive_value = stats["contrastive"] = contrastive.detach()
        with torch.no_grad():
            stats["student_entropy"] = softmax_entropy(student_out[:batch_size], self.student_temp)
            stats["emb_std"] = embedding_spread(embeddings[:batch_size])
        warning = self.monitor.update(step, stats["teacher_entropy"], stats["emb_std"])
        if warning:
            log.warning("step %d: %s", step + 1, warning)
        return loss, stats

    def after_backward(self, step):
        if step < self.freeze_last_layer_steps:
            drop_last_layer_grads([self.student.head])

    def after_step(self, step):
        ema_update(self.teacher, self.student, self.momentum(step))
        if self._contrastive_value is not None:
            reason = self.stop.update_averaged(step, self._contrastive_value)
            if reason:
                log.info("dino: contrastive warm-up stopped at step %d: %s", self.stop.stopped_step, reason)

    def state_dict(self):
        return {"student_head": self.student.head.state_dict(), "teacher_head": self.teacher.head.state_dict(),
                "loss": self.loss_fn.state_dict(), "contrastive_stop": self.stop.state_dict()}

    def load_state_dict(self, state):
        self.student.head.load_state_dict(state["student_head"])
        self.teacher.head.load_state_dict(state["teacher_head"])
        self.loss_fn.load_state_dict(state["loss"])
        if "contrastive_stop" in state:
            self.stop.load_state_dict(state["contrastive_stop"])

    def synchronise(self):
        """Average the teacher's buffers (BN running stats, updated from each process's own data)."""
        average_buffers(self.teacher)
