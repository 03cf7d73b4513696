"""The objective of one fine-tuning stage: cross-entropy of utterance labels."""

import logging
import os

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from pyspk.config import ANY, ConfigError, Map, Text, Value, defaults_map, nullable
from pyspk.data.datadir import DataDir, DataDirError, c_sort_key
from pyspk.device import distributed_active, distributed_rank
from pyspk.models import build_model, read_backbone_entry
from pyspk.models.freeze import last_layer_prefixes, set_frozen_modes
from pyspk.train import checkpoint as ckpt
from pyspk.train.data import AUG_SUFFIXES, group_copies
from pyspk.train.objective import Objective
from pyspk.transfer.labels import labels_for, read_labels
from pyspk.transfer.network import UtteranceClassifier, set_trainable

log = logging.getLogger(__name__)

HEAD_DEFAULTS = {"batchnorm": True, "dropout": 0.0}
HEAD_SECTION = defaults_map(HEAD_DEFAULTS, dropout=Value(float, 0, 1))
STAGE_SECTION = Map({"name": ANY, "train": ANY, "epochs": ANY, "lr": ANY, "weight_decay": ANY})
EVAL_DEFAULTS = {"chunk_size": 1000, "min_chunk_size": 100, "batch_size": 32}
EVAL_SECTION = defaults_map(EVAL_DEFAULTS)
FINETUNE_SECTION = Map({
    "init_model": nullable(Text()), "init_backbone": nullable(Text()), "label_file": Text(),
    "random_init": nullable(Value(bool)), "last_layers": ANY, "balance_classes": Value(bool),
    "chunk_frames": nullable(Value(int, 1)), "augment": nullable(Value(bool)), "head": nullable(HEAD_SECTION),
    "eval": nullable(EVAL_SECTION), "stages": ANY})
BACKBONE_NAME = "model"


def training_utterances(data_dir, data_cfg):
    """The clean utterances in the order the crop dataset indexes them."""
    data = DataDir(data_dir)
    suffixes = tuple(data_cfg.get("aug_suffixes", AUG_SUFFIXES))
    return list(group_copies(data, list(data.feats_scp()), suffixes))


class FinetuneObjective(Objective):
    """Cross-entropy on ``utt2label`` for one stage; config section ``finetune`` (see build_stage_config).

    Labels are looked up by the dataset index of each crop.
    """

    section = "finetune"
    declaration = FINETUNE_SECTION  # the section a config file holds; a stage's adds its stage and init
    metric_names = ("accuracy",)

    def build(self, config, steps_per_epoch, total_steps, device):
        cfg = config["finetune"]
        crops = config["data"]["crops"]
        if len(crops) != 1:
            raise ConfigError(f"fine-tuning takes one data.crops group, got {', '.join(crops)}")
        self.crop_name = next(iter(crops))
        self.seed = int(config.get("seed", 0))
        label_file = cfg.get("label_file", "utt2label")
        label_path = os.path.join(self.data_dir, label_file)
        utts = training_utterances(self.data_dir, config["data"])
        names = labels_for(utts, read_labels(self.data_dir, label_file), label_path)
        self.classes = sorted(set(names), key=c_sort_key)
        if len(self.classes) < 2:
            raise DataDirError(label_path, 0, f"needs at least 2 classes, found {self.classes}")
        index = {c: i for i, c in enumerate(self.classes)}
        self.labels = torch.tensor([index[n] for n in names], dtype=torch.long, device=device)
        counts = torch.bincount(self.labels, minlength=len(self.classes)).float()
        self.class_weights = (counts.sum() / (len(counts) * counts)) if cfg.get("balance_classes", False) else None

        head = {**HEAD_DEFAULTS, **(cfg.get("head") or {})}
        self.classifier = UtteranceClassifier(build_model(config["model"]), len(self.classes), **head)
        self._initialise(cfg["init"], device)
        stage = cfg["stage"]
        prefixes = last_layer_prefixes(self.classifier.backbone, cfg.get("last_layers"))
        self.frozen_modules = set_trainable(self.classifier, stage["train"], prefixes)
        self.classifier.to(device)
        n_train = sum(p.numel() for p in self.classifier.parameters() if p.requires_grad)
        n_all = sum(p.numel() for p in self.classifier.parameters())
        log.info("stage %s: %d classes, training %s (%d of %d parameters)", stage["name"], len(self.classes),
                 stage["train"], n_train, n_all)

    def _initialise(self, init, device):
        if "stage_dir" in init:
            if distributed_active():
                dist.barrier()  # rank 0 finished writing the previous stage's last checkpoint
            state = stage_result(init["stage_dir"])
            self.classifier.backbone.load_state_dict(state["backbones"][BACKBONE_NAME]["state_dict"])
            self.load_state_dict(state["objective"])
        elif not init.get("random_init", False):
            entry = read_backbone_entry(init["file"], init.get("backbone"))
            self.classifier.backbone.load_state_dict(entry["state_dict"])

    def generator(self, device, step):
        """Dropout generator seeded by (seed, step, rank): the same draws after a resume."""
        rank = distributed_rank()
        seed = int(np.random.SeedSequence([self.seed, step, rank]).generate_state(1)[0])
        return torch.Generator(device=device).manual_seed(seed)

    def trainable(self):
        return self.classifier

    def backbones(self):
        return {BACKBONE_NAME: self.classifier.backbone}, BACKBONE_NAME

    def compute_loss(self, model, batch, step):
        set_frozen_modes(self.classifier.backbone, self.frozen_modules)  # the trainer set train mode on all
        crops = batch["crops"][self.crop_name]
        labels = self.labels[batch["index"]].repeat_interleave(crops.shape[1])
        logits = model(crops.flatten(0, 1), generator=self.generator(crops.device, step)).float()
        loss = F.cross_entropy(logits, labels, weight=self.class_weights)
        with torch.no_grad():
            accuracy = (logits.argmax(1) == labels).float().mean()
        return loss, {"accuracy": accuracy}

    def state_dict(self):
        return {"head": self.classifier.head.state_dict(), "classes": list(self.classes)}

    def load_state_dict(self, state):
        if list(state["classes"]) != self.classes:
            raise ConfigError(f"saved classes {state['classes']} differ from this data's {self.classes}")
        self.classifier.head.load_state_dict(state["head"])


def stage_result(stage_dir):
    """The last checkpoint of a finished (or stopped) stage, loaded on the CPU."""
    path = ckpt.find_latest(os.path.join(stage_dir, "checkpoints"))
    if path is None:
        raise ConfigError(f"{stage_dir}: no checkpoint to continue from")
    return ckpt.load_checkpoint(path)
