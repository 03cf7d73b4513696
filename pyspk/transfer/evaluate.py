"""Evaluation of a fine-tuned classifier: chunk-averaged embeddings, the head, accuracy and UAR."""

import logging
import os

import numpy as np
import torch

from pyspk.data.datadir import DataDir, DataDirError, c_sort_key, read_scp, write_table
from pyspk.models import BackboneFileError, build_model, read_backbone_file
from pyspk.models.extract import extract_embeddings, iter_features
from pyspk.transfer.labels import classification_metrics, labels_for, read_labels, write_results
from pyspk.transfer.network import UtteranceClassifier
from pyspk.transfer.objective import EVAL_DEFAULTS

log = logging.getLogger(__name__)


def load_classifier(path, map_location="cpu"):
    """``(UtteranceClassifier in eval mode, classes, eval options from the training config)``."""
    content = read_backbone_file(path, map_location)
    saved = content.get("classifier")
    if not isinstance(saved, dict):
        raise BackboneFileError(f"{path}: not a fine-tuned classifier (no 'classifier' key); "
                                "train one with pyspk.bin.train (objective: finetune)")
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
    for utt, k in zip(utts, logits.argmax(1).tolist(), strict=True):
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
    labels = dict(zip(utts, labels_for(utts, read_labels(data_dir, label_file), data.file(label_file)), strict=True))
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
