#!/usr/bin/env python3
"""Frozen embeddings + logistic regression: the no-fine-tuning line of the table.

Usage: local/linear_probe.py <train-xvector-dir> <train-data> <test-xvector-dir> <test-data> <out-dir>
Reads xvector.scp (from steps/extract_embeddings.sh) and utt2label; standardises the
embeddings, fits a class-balanced multinomial logistic regression on train, and
writes <out-dir>/results.txt (accuracy, UAR, per-class recall) and utt2pred.
e.g.: local/linear_probe.py exp/ssl_xvectors_train data/train_family \\
        exp/ssl_xvectors_test data/test_family exp/linear_probe
"""

import argparse
import os
import sys

from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pyspk.backend.embeddings import read_vector_scp
from pyspk.data.datadir import DataDirError, write_table
from pyspk.transfer.labels import classification_metrics, labels_for, read_labels, write_results


def load(xvector_dir, data_dir):
    keys, vectors = read_vector_scp(os.path.join(xvector_dir, "xvector.scp"))
    return keys, vectors, labels_for(keys, read_labels(data_dir), os.path.join(data_dir, "utt2label"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("train_xvectors", "train_data", "test_xvectors", "test_data", "out_dir"):
        parser.add_argument(name)
    args = parser.parse_args(argv)
    try:
        _, train_x, train_y = load(args.train_xvectors, args.train_data)
        keys, test_x, test_y = load(args.test_xvectors, args.test_data)
    except DataDirError as e:
        print(f"linear_probe.py: error: {e}", file=sys.stderr)
        sys.exit(1)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
    model.fit(train_x, train_y)
    predicted = model.predict(test_x).tolist()
    metrics = classification_metrics(test_y, predicted)
    os.makedirs(args.out_dir, exist_ok=True)
    write_table(os.path.join(args.out_dir, "utt2pred"), dict(zip(keys, predicted, strict=True)))
    write_results(os.path.join(args.out_dir, "results.txt"), metrics,
                  f"logistic regression on {args.train_xvectors}, tested on {args.test_xvectors}")
    print(f"linear_probe.py: accuracy {metrics['accuracy']:.4f} UAR {metrics['uar']:.4f}")


if __name__ == "__main__":
    main()
