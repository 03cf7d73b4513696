"""DINO for speaker embeddings (Caron et al. 2021; Cho et al. 2022 for speech).

The student (backbone + projection head) sees all crops, the teacher (an EMA
of the student, never updated by gradients) sees the global crops only. The
loss is the cross-entropy between the teacher's centred, sharpened softmax and
the student's softmax over every (teacher crop, student crop) pair of
different crops.
"""

import copy
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from pyspk.config import ConfigError, Value, check_keys, check_values
from pyspk.models import build_model
from pyspk.train.loop import Objective
from pyspk.train.schedules import build_schedule

HEAD_DEFAULTS = {"out_dim": 65536, "hidden_dim": 2048, "bottleneck_dim": 256, "nlayers": 3,
                 "use_bn": False, "norm_last_layer": True}
DINO_KEYS = ("head", "student_temp", "teacher_temp", "center_momentum", "momentum", "freeze_last_layer_epochs")
DINO_VALUES = {"student_temp": Value(float, 0, low_open=True), "center_momentum": Value(float, 0, 1),
               "freeze_last_layer_epochs": Value(float, 0)}


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
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_center)
            dist.all_reduce(count)
        self.center.mul_(self.center_momentum).add_(batch_center / count, alpha=1.0 - self.center_momentum)


def head_options(cfg):
    cfg = dict(cfg or {})
    check_keys(cfg, HEAD_DEFAULTS, "dino.head")
    return {**HEAD_DEFAULTS, **cfg}


class DINOObjective(Objective):
    """DINO as an :class:`~pyspk.train.loop.Objective` for the generic trainer.

    Config section ``dino``: ``head`` (see HEAD_DEFAULTS), ``student_temp``,
    ``teacher_temp`` / ``momentum`` (schedules, see pyspk.train.schedules),
    ``center_momentum``, ``freeze_last_layer_epochs``. The data section must
    define crops ``global`` (teacher + student) and ``local`` (student only;
    may be absent).
    """

    section = "dino"
    metric_names = ("teacher_entropy", "kl", "emb_std")
    schedule_names = ("momentum", "teacher_temp")

    def build(self, config, steps_per_epoch, total_steps, device):
        cfg = config.get(self.section)
        if not isinstance(cfg, dict):
            raise ConfigError("config needs a 'dino' section")
        check_keys(cfg, DINO_KEYS, "dino")
        check_values(cfg, DINO_VALUES, "dino")
        crops = config["data"]["crops"]
        if "global" not in crops or list(crops)[0] != "global" or set(crops) - {"global", "local"}:
            raise ConfigError("dino needs data.crops 'global' (first) and optionally 'local'")
        self.n_global = int(crops["global"]["count"])
        if self.n_global < 1 or self.n_global + int(crops.get("local", {}).get("count", 0)) < 2:
            raise ConfigError("dino needs at least 1 global crop and 2 crops in all")
        head_cfg = head_options(cfg.get("head"))
        backbone = build_model(config["model"])
        head = DINOHead(backbone.embed_dim, **head_cfg)
        self.student = MultiCropNet(backbone, head).to(device)
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.loss_fn = DINOLoss(head_cfg["out_dim"], self.n_global, float(cfg.get("center_momentum", 0.9))).to(device)
        self.student_temp = float(cfg.get("student_temp", 0.1))
        self.teacher_temp = build_schedule(cfg.get("teacher_temp", {"base": 0.07, "warmup_start": 0.04,
                                                                    "warmup_epochs": 0, "kind": "constant"}),
                                           steps_per_epoch, total_steps, "dino.teacher_temp")
        self.momentum = build_schedule(cfg.get("momentum", {"base": 0.996, "final": 1.0}),
                                       steps_per_epoch, total_steps, "dino.momentum")
        self.freeze_last_layer_steps = round(float(cfg.get("freeze_last_layer_epochs", 1)) * steps_per_epoch)

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
            _, teacher_out = self.teacher(groups[:1])
        embeddings, student_out = model(groups)
        loss, stats = self.loss_fn(student_out, teacher_out, self.student_temp, self.teacher_temp(step))
        self.loss_fn.update_center(teacher_out)
        with torch.no_grad():
            # Collapse monitor: per-dimension spread of unit-length embeddings, x sqrt(dim) so ~1 when spread out.
            unit = F.normalize(embeddings[:batch_size].float(), dim=-1)
            stats["emb_std"] = unit.std(0).mean() * math.sqrt(unit.shape[1])
        return loss, stats

    def after_backward(self, step):
        if step < self.freeze_last_layer_steps:
            for p in self.student.head.last_layer.parameters():
                p.grad = None

    def after_step(self, step):
        ema_update(self.teacher, self.student, self.momentum(step))

    def state_dict(self):
        return {"student_head": self.student.head.state_dict(), "teacher_head": self.teacher.head.state_dict(),
                "loss": self.loss_fn.state_dict()}

    def load_state_dict(self, state):
        self.student.head.load_state_dict(state["student_head"])
        self.teacher.head.load_state_dict(state["teacher_head"])
        self.loss_fn.load_state_dict(state["loss"])

    def synchronise(self):
        """Average the teacher's buffers (BN running stats, updated from each process's own data)."""
        if dist.is_available() and dist.is_initialized():
            world = dist.get_world_size()
            for buffer in self.teacher.buffers():
                if buffer.is_floating_point():
                    dist.all_reduce(buffer)
                    buffer.div_(world)
