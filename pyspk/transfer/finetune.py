"""Fine-tuning a self-supervised backbone into an utterance-level classifier.

Labels come from ``<data-dir>/utt2label`` (``utt label``: emotion, language,
age group ...). The network is the backbone followed by a new head
(optional BatchNorm, dropout, linear layer over the embedding). Training runs
in *stages*, each a complete run of the generic :class:`~pyspk.train.loop.Trainer`
in its own sub-directory (checkpoints, exact resume, logs, metrics)::

    finetune:
      stages:
        - {name: last, train: last, epochs: 4, lr: {base: 0.01, final: 0.001}}
        - {name: all, train: all, epochs: 6, lr: {base: 0.001, final: 1.0e-5}}

``train`` says what a stage updates: ``head`` (new head only), ``last`` (head
plus the backbone's last affine/embedding layers, see :data:`LAST_LAYERS`) or
``all``. Frozen parts keep their BatchNorm statistics (they run in eval
mode). Stage 1 starts from the backbone file (or from random weights of the
same architecture with ``random_init``); each later stage from the end of the
one before. The finished classifier is ``<exp>/final.pt``, a backbone file
(so steps/extract_embeddings.sh reads the fine-tuned backbone) whose
``classifier`` key holds the head and the class names.

:func:`evaluate` embeds test utterances in chunks as extraction does, applies
the head and reports accuracy and unweighted average recall (UAR, the mean of
the per-class recalls).
"""

import copy
import logging
import os

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from pyspk.config import ConfigError, check_keys, load_yaml, save_config
from pyspk.data.datadir import DataDir, DataDirError, c_sort_key, read_kv, read_scp, write_table
from pyspk.fileutil import atomic_open
from pyspk.models import BackboneFileError, build_model, read_backbone_file, save_backbones
from pyspk.models.extract import extract_embeddings, iter_features
from pyspk.train import checkpoint as ckpt
from pyspk.train.data import AUG_SUFFIXES, group_copies
from pyspk.train.loop import Objective, Trainer

log = logging.getLogger(__name__)

# Parameter-name prefixes of each registry model's last affine/embedding layers.
LAST_LAYERS = {
    "resnet": ["embedding"],
    "resnet34": ["embedding"],
    "resnet_thin": ["embedding"],
    "ecapa": ["embedding", "embed_norm"],
    "tdnn": ["segment6"],
}
TRAIN_WHAT = ("head", "last", "all")
FINETUNE_KEYS = ("label_file", "backbone", "random_init", "last_layers", "balance_classes", "head", "eval",
                 "stages")
STAGE_KEYS = ("name", "train", "epochs", "lr", "weight_decay")
HEAD_DEFAULTS = {"batchnorm": True, "dropout": 0.0}
EVAL_DEFAULTS = {"chunk_size": 1000, "min_chunk_size": 100, "batch_size": 32}
BACKBONE_NAME = "model"


# -- labels and metrics ------------------------------------------------------------

def read_labels(data_dir, label_file="utt2label"):
    """``{utt: label}`` from ``<data_dir>/<label_file>`` (DataDirError naming file and line)."""
    path = os.path.join(data_dir, label_file)
    if not os.path.isfile(path):
        raise DataDirError(path, 0, "no such label file")
    return read_kv(path)


def labels_for(utts, labels, label_path):
    """Labels of ``utts`` in order; DataDirError for the first utterance without one."""
    missing = [u for u in utts if u not in labels]
    if missing:
        raise DataDirError(label_path, 0, f"no label for utterance '{missing[0]}' "
                                          f"({len(missing)} of {len(utts)} utterances have none)")
    return [labels[u] for u in utts]


def classification_metrics(true_labels, predicted_labels):
    """Accuracy, UAR (mean recall over the classes present in ``true_labels``) and per-class recall.

    Returns ``{"accuracy", "uar", "recall": {class: (recall, count)}}``.
    """
    true = np.asarray(true_labels, dtype=object)
    pred = np.asarray(predicted_labels, dtype=object)
    if len(true) == 0 or len(true) != len(pred):
        raise ValueError(f"need equally many true and predicted labels, got {len(true)} and {len(pred)}")
    correct = true == pred
    recall = {}
    for cls in sorted(set(true.tolist()), key=c_sort_key):
        of_class = true == cls
        recall[cls] = (float(correct[of_class].mean()), int(of_class.sum()))
    return {"accuracy": float(correct.mean()), "uar": float(np.mean([r for r, _ in recall.values()])),
            "recall": recall}


def write_results(path, metrics, title, num_failed=0):
    """Write ``key value`` lines: accuracy, uar, utterances, failed, then ``recall <class> <r> <count>``."""
    count = sum(n for _, n in metrics["recall"].values())
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(f"# {title}\n")
        f.write(f"accuracy {metrics['accuracy']:.4f}\nuar {metrics['uar']:.4f}\n")
        f.write(f"utterances {count}\nfailed {num_failed}\n")
        for cls, (value, n) in metrics["recall"].items():
            f.write(f"recall {cls} {value:.4f} {n}\n")


def read_results(path):
    """``{"accuracy": float, "uar": float, ...}`` from a results file written by :func:`write_results`."""
    values = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields or fields[0].startswith("#") or fields[0] == "recall":
                continue
            if len(fields) != 2:
                raise DataDirError(path, lineno, f"expected 'key value', got {line.strip()!r}")
            values[fields[0]] = float(fields[1])
    return values


# -- the network -------------------------------------------------------------------

class UtteranceClassifier(nn.Module):
    """Backbone -> [BatchNorm] -> dropout -> linear over ``num_classes``.

    Dropout draws from the ``generator`` passed to forward, not the global
    generator, so a resumed run draws the same masks (the data loader also
    takes numbers from the global generator each time it starts iterating).
    """

    def __init__(self, backbone, num_classes, batchnorm=True, dropout=0.0):
        super().__init__()
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"finetune.head.dropout must be in [0, 1), got {dropout}")
        self.backbone = backbone
        self.dropout = float(dropout)
        layers = [nn.BatchNorm1d(backbone.embed_dim)] if batchnorm else []
        self.head = nn.Sequential(*layers, nn.Linear(backbone.embed_dim, num_classes))

    def forward(self, feats, generator=None):
        x = self.backbone(feats)
        if self.head[0] is not self.head[-1]:
            x = self.head[0](x)
        if self.training and self.dropout > 0:
            keep = torch.rand(x.shape, generator=generator, device=x.device) >= self.dropout
            x = x * keep / (1.0 - self.dropout)
        return self.head[-1](x)

    def classify(self, embeddings):
        """Logits of (already averaged) embeddings, in eval mode."""
        return self.head(embeddings)


def last_layer_prefixes(backbone, prefixes=None):
    """The parameter-name prefixes of ``backbone``'s last layers (registry default when None), checked."""
    name = backbone.config["name"] if backbone.config else None
    if prefixes is None:
        if name not in LAST_LAYERS:
            raise ConfigError(f"no default last layers for model '{name}'; set finetune.last_layers")
        prefixes = LAST_LAYERS[name]
    if isinstance(prefixes, str) or not isinstance(prefixes, list) or not prefixes:
        raise ConfigError(f"finetune.last_layers must be a non-empty list of parameter-name prefixes, "
                          f"got {prefixes!r}")
    names = [n for n, _ in backbone.named_parameters()]
    for prefix in prefixes:
        if not any(n == prefix or n.startswith(prefix + ".") for n in names):
            top = sorted({n.split(".")[0] for n in names})
            raise ConfigError(f"finetune.last_layers: '{prefix}' names no parameter of model '{name}'; "
                              f"its top-level modules are {', '.join(top)}")
    return list(prefixes)


def set_trainable(classifier, what, prefixes):
    """Mark parameters trainable for a stage; return the backbone modules to keep in eval mode.

    ``what``: ``head``, ``last`` (head + parameters under ``prefixes``) or ``all``.
    A frozen module runs in eval mode so its BatchNorm statistics stay as they were.
    """
    if what not in TRAIN_WHAT:
        raise ConfigError(f"finetune stage 'train' must be one of {', '.join(TRAIN_WHAT)}, got {what!r}")
    trainable = set()
    for name, param in classifier.backbone.named_parameters():
        on = what == "all" or (what == "last" and any(name == p or name.startswith(p + ".") for p in prefixes))
        param.requires_grad_(on)
        if on:
            trainable.add(name)
    for param in classifier.head.parameters():
        param.requires_grad_(True)
    if what == "all":
        return []
    if not trainable:
        return [classifier.backbone]
    # A module is frozen when no trainable parameter lives under it (so eval() on it spares the rest).
    return [module for mname, module in classifier.backbone.named_modules()
            if mname and not any(t.startswith(mname + ".") for t in trainable)]


# -- the objective -----------------------------------------------------------------

def training_utterances(data_dir, data_cfg):
    """The clean utterances in the order the crop dataset indexes them."""
    data = DataDir(data_dir)
    suffixes = tuple(data_cfg.get("aug_suffixes", AUG_SUFFIXES))
    return list(group_copies(data, list(data.feats_scp()), suffixes))


class FinetuneObjective(Objective):
    """Cross-entropy on ``utt2label`` for one stage; config section ``finetune`` (see build_stage_config).

    Labels are looked up by the dataset index of each crop, so ``with_labels``
    (speaker labels from utt2spk) is not used.
    """

    section = "finetune"
    metric_names = ("accuracy",)

    def __init__(self, data_dir):
        self.data_dir = data_dir

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
            if dist.is_available() and dist.is_initialized():
                dist.barrier()  # rank 0 finished writing the previous stage's last checkpoint
            state = stage_result(init["stage_dir"])
            self.classifier.backbone.load_state_dict(state["backbones"][BACKBONE_NAME]["state_dict"])
            self.load_state_dict(state["objective"])
        elif not init.get("random_init", False):
            entry = backbone_entry_from_file(init["file"], init.get("backbone"))
            self.classifier.backbone.load_state_dict(entry["state_dict"])

    def generator(self, device, step):
        """Dropout generator seeded by (seed, step, rank): the same draws after a resume."""
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        seed = int(np.random.SeedSequence([self.seed, step, rank]).generate_state(1)[0])
        return torch.Generator(device=device).manual_seed(seed)

    def trainable(self):
        return self.classifier

    def backbones(self):
        return {BACKBONE_NAME: self.classifier.backbone}, BACKBONE_NAME

    def compute_loss(self, model, batch, step):
        for module in self.frozen_modules:  # the trainer sets train mode on the whole model
            module.eval()
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


# -- staged training ---------------------------------------------------------------

def backbone_entry_from_file(path, name=None):
    """``{"config", "state_dict"}`` of backbone ``name`` (default: the file's default) in ``path``."""
    content = read_backbone_file(path)
    name = content["default_backbone"] if name is None else name
    if name not in content["backbones"]:
        raise BackboneFileError(f"{path}: no backbone '{name}'; available: {', '.join(content['backbones'])}")
    return content["backbones"][name]


def stage_result(stage_dir):
    """The last checkpoint of a finished (or stopped) stage, loaded on the CPU."""
    path = ckpt.find_latest(os.path.join(stage_dir, "checkpoints"))
    if path is None:
        raise ConfigError(f"{stage_dir}: no checkpoint to continue from")
    return ckpt.load_checkpoint(path)


def check_finetune_config(config):
    """Validate the ``finetune`` section and the one-crop data section (ConfigError)."""
    cfg = config.get("finetune")
    if not isinstance(cfg, dict):
        raise ConfigError("config needs a 'finetune' section")
    check_keys(cfg, FINETUNE_KEYS, "finetune")
    check_keys(cfg.get("head") or {}, HEAD_DEFAULTS, "finetune.head")
    check_keys(cfg.get("eval") or {}, EVAL_DEFAULTS, "finetune.eval")
    stages = cfg.get("stages")
    if not isinstance(stages, list) or not stages:
        raise ConfigError("finetune.stages must be a non-empty list of stages")
    names = []
    for i, stage in enumerate(stages, 1):
        if not isinstance(stage, dict):
            raise ConfigError(f"finetune.stages[{i}] must be a mapping")
        check_keys(stage, STAGE_KEYS, f"finetune.stages[{i}]")
        if stage.get("train") not in TRAIN_WHAT:
            raise ConfigError(f"finetune.stages[{i}].train must be one of {', '.join(TRAIN_WHAT)}, "
                              f"got {stage.get('train')!r}")
        if not isinstance(stage.get("epochs"), int) or stage["epochs"] < 1:
            raise ConfigError(f"finetune.stages[{i}].epochs must be a positive integer")
        names.append(str(stage.get("name", stage["train"])))
    if len(set(names)) != len(names):
        raise ConfigError(f"finetune.stages need distinct names, got {names}")
    for name in ("data", "optim", "train"):
        if not isinstance(config.get(name), dict):
            raise ConfigError(f"config needs a '{name}' section")
    crops = config["data"].get("crops")
    if not isinstance(crops, dict) or len(crops) != 1:
        raise ConfigError("fine-tuning needs exactly one data.crops group, e.g. {chunk: {count: 1, frames: 200}}")


def with_cli_options(config, chunk_frames=None, augment=None):
    """``config`` with the training chunk length set and, when ``augment`` is False, augmentation off."""
    config = copy.deepcopy(config)
    data = config["data"]
    if chunk_frames is not None:
        if chunk_frames < 1:
            raise ConfigError(f"chunk length must be a positive number of frames, got {chunk_frames}")
        for spec in data["crops"].values():
            spec["frames"] = int(chunk_frames)
    if augment is False:
        data["aug_prob"] = 0.0
        for name in ("specaug", "channel"):
            data[name] = {**(data.get(name) or {}), "prob": 0.0}
    return config


def stage_dirs(exp_dir, config):
    return [os.path.join(exp_dir, f"stage{i}_{stage.get('name', stage['train'])}")
            for i, stage in enumerate(config["finetune"]["stages"], 1)]


def build_stage_config(config, index, model_cfg, init):
    """The Trainer config of stage ``index`` (0-based): its epochs, learning rate and initialisation."""
    cfg = config["finetune"]
    stage = dict(cfg["stages"][index])
    stage.setdefault("name", stage["train"])
    optim = copy.deepcopy(config["optim"])
    for key in ("lr", "weight_decay"):
        if key in stage:
            optim[key] = stage[key]
    return {
        "seed": config.get("seed", 0),
        "data": copy.deepcopy(config["data"]),
        "model": copy.deepcopy(model_cfg),
        "optim": optim,
        "train": {**copy.deepcopy(config["train"]), "epochs": stage["epochs"]},
        "finetune": {**{k: copy.deepcopy(v) for k, v in cfg.items() if k != "stages"}, "stage": stage,
                     "init": init},
    }


def steps_done(stage_dir):
    found = ckpt.list_checkpoints(os.path.join(stage_dir, "checkpoints"))
    return found[-1][0] if found else 0


def run_finetune(config, data_dir, exp_dir, init_path, device="auto", max_steps=None):
    """Run all stages into ``exp_dir`` and export ``final.pt``; resumable.

    ``max_steps`` counts optimiser steps over all stages; when it stops the run
    early the function returns False (re-run to continue). Returns True when
    ``final.pt`` is complete.
    """
    check_finetune_config(config)
    done_path = os.path.join(exp_dir, ".done")
    config_path = os.path.join(exp_dir, "config.yaml")
    if os.path.isfile(done_path):
        log.info("%s exists: fine-tuning already finished, nothing to do", done_path)
        return True
    cfg = config["finetune"]
    init_path = os.path.abspath(init_path)
    model_cfg = backbone_entry_from_file(init_path, cfg.get("backbone"))["config"]
    dirs = stage_dirs(exp_dir, config)
    if os.path.isfile(config_path) and load_yaml(config_path) != config and any(steps_done(d) for d in dirs):
        raise ConfigError(f"{config_path}: differs from this run's config and checkpoints exist; "
                          "use a new experiment dir or the same config to resume")
    is_main = int(os.environ.get("RANK", "0")) == 0
    if is_main:
        os.makedirs(exp_dir, exist_ok=True)
        save_config(config, config_path)
    steps_before = 0
    for index, stage_dir in enumerate(dirs):
        init = {"file": init_path, "backbone": cfg.get("backbone"), "random_init": bool(cfg.get("random_init"))} \
            if index == 0 else {"stage_dir": os.path.abspath(dirs[index - 1])}
        stage_config = build_stage_config(config, index, model_cfg, init)
        remaining = None if max_steps is None else max_steps - steps_before
        if remaining is not None and remaining <= 0:
            return False
        trainer = Trainer(FinetuneObjective(data_dir), stage_config, data_dir, stage_dir, device=device)
        trainer.run(remaining)
        if not os.path.isfile(os.path.join(stage_dir, ".done")):
            return False
        steps_before += steps_done(stage_dir)
    if is_main:
        export_classifier(os.path.join(exp_dir, "final.pt"), dirs[-1], config)
        with open(done_path, "w") as f:
            f.write("done\n")
        log.info("fine-tuning finished: %s", os.path.join(exp_dir, "final.pt"))
    return True


def export_classifier(path, last_stage_dir, config):
    """Write the classifier file from the last stage's final checkpoint."""
    state = stage_result(last_stage_dir)
    entry = state["backbones"][BACKBONE_NAME]
    backbone = build_model(entry["config"])
    backbone.load_state_dict(entry["state_dict"])
    head = {**HEAD_DEFAULTS, **(config["finetune"].get("head") or {})}
    classifier = {"classes": list(state["objective"]["classes"]), "head": state["objective"]["head"],
                  "head_config": head}
    save_backbones(path, {BACKBONE_NAME: backbone}, BACKBONE_NAME, {"classifier": classifier, "config": config})


# -- evaluation --------------------------------------------------------------------

def load_classifier(path, map_location="cpu"):
    """``(UtteranceClassifier in eval mode, classes, eval options from the training config)``."""
    content = read_backbone_file(path, map_location)
    saved = content.get("classifier")
    if not isinstance(saved, dict):
        raise BackboneFileError(f"{path}: not a fine-tuned classifier (no 'classifier' key); "
                                "train one with pyspk.bin.finetune")
    entry = content["backbones"][content["default_backbone"]]
    backbone = build_model(entry["config"])
    backbone.load_state_dict(entry["state_dict"])
    classifier = UtteranceClassifier(backbone, len(saved["classes"]), **saved["head_config"])
    classifier.head.load_state_dict(saved["head"])
    eval_cfg = {**EVAL_DEFAULTS, **((content.get("config") or {}).get("finetune", {}).get("eval") or {})}
    return classifier.to(map_location).eval(), list(saved["classes"]), eval_cfg


@torch.inference_mode()
def predict(classifier, classes, feats_iter, chunk_size, min_chunk_size, batch_size, device):
    """Yield ``(utt, predicted class)``: chunk-averaged embedding, then the head."""
    utts, embeddings = [], []
    for utt, embedding in extract_embeddings(classifier.backbone, feats_iter, chunk_size, min_chunk_size,
                                             batch_size, device):
        utts.append(utt)
        embeddings.append(embedding)
    if not utts:
        return
    logits = classifier.classify(torch.from_numpy(np.stack(embeddings)).to(device))
    for utt, k in zip(utts, logits.argmax(1).tolist()):
        yield utt, classes[k]


def evaluate(model_path, data_dir, out_dir, label_file="utt2label", chunk_size=None, min_chunk_size=None,
             batch_size=None, device="cpu"):
    """Classify every utterance of ``data_dir``; write ``<out_dir>/results.txt`` and ``utt2pred``.

    Chunk options default to the model's training config (``finetune.eval``).
    Returns ``(metrics, failed)``; failed utterances (unreadable features)
    are listed by id in the log and counted, not scored.
    """
    device = torch.device(device)
    classifier, classes, eval_cfg = load_classifier(model_path, device)
    chunk_size = chunk_size or eval_cfg["chunk_size"]
    min_chunk_size = min(min_chunk_size or eval_cfg["min_chunk_size"], chunk_size)
    batch_size = batch_size or eval_cfg["batch_size"]
    data = DataDir(data_dir)
    feats = read_scp(data.file("feats.scp"))
    utts = sorted(feats, key=c_sort_key)
    labels = dict(zip(utts, labels_for(utts, read_labels(data_dir, label_file), data.file(label_file))))
    unknown = sorted(set(labels.values()) - set(classes), key=c_sort_key)
    if unknown:
        log.warning("test classes not seen in training (always wrong): %s", " ".join(unknown))
    failed = []
    features = iter_features(feats, utts, classifier.backbone.feat_dim, failed=failed)
    predictions = dict(predict(classifier, classes, features, chunk_size, min_chunk_size, batch_size, device))
    if not predictions:
        raise DataDirError(data.file("feats.scp"), 0, "no utterance could be classified")
    scored = sorted(predictions, key=c_sort_key)
    metrics = classification_metrics([labels[u] for u in scored], [predictions[u] for u in scored])
    os.makedirs(out_dir, exist_ok=True)
    write_table(os.path.join(out_dir, "utt2pred"), predictions)
    write_results(os.path.join(out_dir, "results.txt"), metrics,
                  f"{model_path} on {data_dir} ({label_file}, chunk {chunk_size})", len(failed))
    log.info("Done %d, failed %d: accuracy %.4f, UAR %.4f", len(predictions), len(failed),
             metrics["accuracy"], metrics["uar"])
    return metrics, failed
