"""Utterance labels (``utt2label``) and classification metrics of fine-tuned classifiers."""

import os

import numpy as np

from pyspk.data.datadir import DataDirError, c_sort_key, read_kv
from pyspk.fileutil import atomic_open


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
