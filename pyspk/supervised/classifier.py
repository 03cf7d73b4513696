"""Speaker classification on a data dir's ``utt2spk`` (true speakers or cluster pseudo-labels).

The backbone (any of pyspk.models) maps random crops to embeddings; an
AAM-softmax head classifies them. Crops, augmented copies and feature
augmentation are those of the DINO trainer (pyspk.train.data / augment);
every crop of every ``data.crops`` group is one training example labelled
with its utterance's speaker.

Config section ``classifier``::

    margin: 0.2            # additive angular margin (radians)
    scale: 30.0            # logit scale
    margin_warmup: {start_epoch: 1, end_epoch: 4}   # or null: full margin from the start
    init_model: null       # backbone file to start from (e.g. exp/dino/final.pt)
    init_backbone: null    # which backbone of it (default: the file's default)
    init_weight: 0.0       # share of init_model's weights mixed into final.pt (WiSE-FT; 0: the trained weights)
    subcenters: 1          # weight vectors per class (sub-centre AAM; 1: plain AAM)
    inter_topk: null       # or {k: 5, margin: 0.06}: extra margin on the k hardest negatives
    balanced_classes: false  # batches draw classes uniformly, then an utterance of the class
    two_step: null         # or {freeze_epochs, lr_scale, train}: trunk frozen first (pyspk.supervised.two_step)

``init_weight`` w > 0 writes ``(1 - w) * trained + w * initial`` for every
floating-point weight and statistic of the backbone (integer buffers: the
trained ones): the weight-space ensemble of Wortsman et al. (WiSE-FT, 2022),
which keeps what the pre-trained (SSL) model knows of conditions the few
fine-tuning labels do not cover (other sessions, channels) while taking the
labels' gain; the interpolation is meaningful because fine-tuning from that
model stays in its basin.

Sub-centres and the inter-top-k margin are described in pyspk.supervised.aam,
the class-balanced sampler in pyspk.train.data.

The trained backbone is exported as ``{"model": backbone}`` (default
``model``), so the next round of pseudo-labelling can extract with it or
start from it.
"""

import logging
import math

import numpy as np
import torch
from torch import nn

from pyspk.config import ConfigError, Map, Text, Value, check_section, nullable
from pyspk.data.datadir import DataDir, DataDirError, c_sort_key
from pyspk.models import build_model, init_from_file
from pyspk.supervised.aam import WARMUP_SECTION, AAMSoftmax, build_margin_schedule
from pyspk.supervised.two_step import TWO_STEP_SECTION, TwoStep
from pyspk.train.data import AUG_SUFFIXES, group_copies
from pyspk.train.objective import Objective
from pyspk.train.wav_data import wav_utterances

log = logging.getLogger(__name__)

INTER_TOPK_SECTION = Map({"k": Value(int, 0), "margin": Value(float, 0, math.pi / 2)})
CLASSIFIER_SECTION = Map({
    "margin": Value(float, 0, math.pi / 2), "scale": Value(float, 0, low_open=True),
    "margin_warmup": nullable(WARMUP_SECTION), "init_model": nullable(Text()), "init_backbone": nullable(Text()),
    "init_weight": Value(float, 0, 1), "subcenters": Value(int, 1), "inter_topk": nullable(INTER_TOPK_SECTION),
    "balanced_classes": Value(bool), "two_step": nullable(TWO_STEP_SECTION)})
BACKBONE_NAME = "model"


def utterance_labels(data_dir, aug_suffixes=AUG_SUFFIXES, source="feats"):
    """``(classes, labels)`` for the utterances in the order the crop dataset of ``data.source`` indexes them.

    ``classes`` are the speaker ids of ``utt2spk`` (C-sorted), ``labels`` an
    int64 array of class indices, one per clean utterance of ``feats.scp``
    (``source`` feats) or per utterance of ``wav.scp`` and segments (wav).
    """
    data = DataDir(data_dir)
    if source == "wav":
        utts, listing = list(wav_utterances(data_dir)), "wav.scp"
    else:
        utts, listing = list(group_copies(data, list(data.feats_scp()), tuple(aug_suffixes))), "feats.scp"
    utt2spk = data.utt2spk()
    for utt in utts:
        if utt not in utt2spk:
            raise DataDirError(data.file("utt2spk"), 0, f"no speaker for utterance '{utt}' of {listing}")
    speakers = [utt2spk[u] for u in utts]
    classes = sorted(set(speakers), key=c_sort_key)
    if len(classes) < 2:
        raise DataDirError(data.file("utt2spk"), 0, f"classification needs at least 2 speakers, found {classes}")
    index = {spk: i for i, spk in enumerate(classes)}
    return classes, np.array([index[s] for s in speakers], dtype=np.int64)


def classifier_section(config):
    """The checked ``classifier`` section of ``config`` (ConfigError naming the key otherwise)."""
    cfg = config.get("classifier")
    if not isinstance(cfg, dict):
        raise ConfigError("config needs a 'classifier' section")
    check_section(cfg, CLASSIFIER_SECTION, "classifier")
    return cfg


def inter_topk_of(value):
    """``(k, margin)`` of ``classifier.inter_topk`` (null: ``(0, 0.0)``, off)."""
    if value is None:
        return 0, 0.0
    if not isinstance(value, dict):
        raise ConfigError(f"classifier.inter_topk must be a mapping {{k, margin}} or null, got {value!r}")
    check_section(value, INTER_TOPK_SECTION, "classifier.inter_topk")
    return int(value.get("k", 5)), float(value.get("margin", 0.06))


class ClassifierNet(nn.Module):
    """Backbone + AAM-softmax head in one module (one DDP call).

    ``forward(groups, labels, margin)`` takes a list of ``(n_i, frames_i,
    feat_dim)`` crop tensors and their concatenated labels and returns
    ``(loss, cosines)``.
    """

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, groups, labels, margin):
        embeddings = torch.cat([self.backbone(g) for g in groups])
        loss, _, cosines = self.head(embeddings, labels, margin)
        return loss, cosines


class ClassifierObjective(Objective):
    """AAM-softmax speaker classification as an :class:`~pyspk.train.objective.Objective`.

    Labels come from ``<data_dir>/utt2spk`` and are looked up by the crop's
    dataset index, the utterances listed as ``data.source`` lists them (the
    Objective is built before it could see the dataset, and the head needs
    the number of classes).
    """

    section = "classifier"
    declaration = CLASSIFIER_SECTION
    metric_names = ("accuracy",)
    schedule_names = ("margin",)

    def build(self, config, steps_per_epoch, total_steps, device):
        cfg = classifier_section(config)
        self.crop_names = list(config["data"]["crops"])
        backbone = build_model(config["model"])
        self.classes, labels = utterance_labels(self.data_dir, config["data"].get("aug_suffixes", AUG_SUFFIXES),
                                                config["data"].get("source", "feats"))
        self.labels = torch.from_numpy(labels).to(device)
        counts = np.bincount(labels, minlength=len(self.classes))
        log.info("%d classes from %s/utt2spk, %d to %d utterances each", len(self.classes), self.data_dir,
                 counts.min(), counts.max())
        self.init_weight = float(cfg.get("init_weight", 0.0))
        if self.init_weight and not cfg.get("init_model"):
            raise ConfigError(f"classifier.init_weight {self.init_weight:g} mixes in the initial model's weights: "
                              "it needs classifier.init_model (--init-model)")
        self.init_state = None
        if cfg.get("init_model"):
            init_from_file(backbone, cfg["init_model"], cfg.get("init_backbone"))
            log.info("backbone initialised from %s", cfg["init_model"])
            if self.init_weight:
                self.init_state = {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()}
        self.margin = build_margin_schedule(cfg.get("margin", 0.2), cfg.get("margin_warmup"), steps_per_epoch,
                                            "classifier.margin_warmup")
        head = AAMSoftmax(backbone.embed_dim, len(self.classes), self.margin.margin, float(cfg.get("scale", 30.0)),
                          int(cfg.get("subcenters", 1)), inter_topk_of(cfg.get("inter_topk")))
        self.two_step = None
        if cfg.get("two_step") is not None:
            self.two_step = TwoStep(backbone, cfg["two_step"], steps_per_epoch, int(config["train"]["epochs"]))
        self.net = ClassifierNet(backbone, head).to(device)

    def sampling_labels(self, config):
        if not classifier_section(config).get("balanced_classes", False):
            return None
        classes, labels = utterance_labels(self.data_dir, config["data"].get("aug_suffixes", AUG_SUFFIXES),
                                           config["data"].get("source", "feats"))
        log.info("class-balanced batches: each of the %d classes drawn with probability 1/%d", len(classes),
                 len(classes))
        return labels

    def lr_factor(self, step):
        return 1.0 if self.two_step is None else self.two_step.lr_factor(step)

    def after_backward(self, step):
        if self.two_step is not None:
            self.two_step.drop_frozen_gradients(step)

    def trainable(self):
        return self.net

    def backbones(self):
        return {BACKBONE_NAME: self.net.backbone}, BACKBONE_NAME

    def final_backbones(self, content):
        if self.init_state is None:
            return content
        w = self.init_weight
        state = content["backbones"][BACKBONE_NAME]["state_dict"]
        for key, value in state.items():
            if value.is_floating_point():
                initial = self.init_state[key].to(value.device, torch.float64)
                state[key] = ((1.0 - w) * value.double() + w * initial).to(value.dtype)
        log.info("final.pt: %g x the trained weights + %g x the initial model's (classifier.init_weight)", 1 - w, w)
        return content

    def schedule_values(self, step):
        return {"margin": self.margin(step)}

    def compute_loss(self, model, batch, step):
        if self.two_step is not None:
            self.two_step.set_modes(step)
        crops = batch["crops"]
        # (B, n, T, D) -> crop-major (n * B, T, D); crop c of item b has the label of item b.
        groups = [crops[name].transpose(0, 1).flatten(0, 1) for name in self.crop_names]
        item_labels = self.labels[batch["index"]]
        labels = torch.cat([item_labels.repeat(crops[name].shape[1]) for name in self.crop_names])
        loss, cosines = model(groups, labels, self.margin(step))
        with torch.no_grad():
            accuracy = (cosines.argmax(1) == labels).float().mean()
        return loss, {"accuracy": accuracy}

    def state_dict(self):
        return {"head": self.net.head.state_dict(), "classes": list(self.classes)}

    def load_state_dict(self, state):
        if list(state["classes"]) != self.classes:
            raise ConfigError(f"{self.data_dir}/utt2spk: its {len(self.classes)} speakers differ from the "
                              f"{len(state['classes'])} classes of the checkpoint; use a new experiment dir")
        self.net.head.load_state_dict(state["head"])
