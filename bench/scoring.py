"""Back-end speed: 1M cosine trials, 1M PLDA trials (192-dim), EER + minDCF over 1M scores.

Usage: tools/venv/bin/python bench/scoring.py [--num-trials 1000000] [--dim 192] [--num-utts 20000]

Embeddings, trials and the PLDA training set are random (made here). Prints
the wall time of each stage; trial keys are mapped to rows with numpy and
scored in batches (pyspk.backend.scoring).
"""

import argparse
import time

import numpy as np

from pyspk.backend.cosine import CosineScorer
from pyspk.backend.pipeline import train_plda_backend
from pyspk.backend.scoring import index_trials, score_pairs
from pyspk.metrics import compute_eer, compute_min_dcf


def timed(label, fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    print(f"{label:<44s} {time.perf_counter() - start:7.3f} s")
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-trials", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--num-utts", type=int, default=20000, help="enrolment/test utterances")
    parser.add_argument("--lda-dim", type=int, default=128)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    num_spk = args.num_utts // 10
    speakers = rng.standard_normal((num_spk, args.dim)) * 0.3  # hard enough for a non-zero EER
    utt_spk = rng.integers(0, num_spk, args.num_utts)
    x = (speakers[utt_spk] + rng.standard_normal((args.num_utts, args.dim))).astype(np.float32)
    keys = [f"utt{i:07d}" for i in range(args.num_utts)]
    enroll = rng.integers(0, args.num_utts, args.num_trials)
    test = rng.integers(0, args.num_utts, args.num_trials)
    trials = [(keys[e], keys[t], bool(utt_spk[e] == utt_spk[t]))
              for e, t in zip(enroll.tolist(), test.tolist(), strict=True)]
    print(f"{args.num_trials} trials over {args.num_utts} random {args.dim}-dim embeddings")

    _, ei, ti = timed("map 1M trial keys to rows", index_trials, trials, "trials", keys, keys, "enroll", "test")

    def cosine():
        scorer = CosineScorer(mean=x.mean(axis=0))
        side_e = scorer.enroll_side(x)
        return score_pairs(side_e, scorer.test_side(x), ei, ti)

    cosine_scores = timed("cosine: prepare + score 1M trials", cosine)

    train_x = (speakers[np.repeat(np.arange(num_spk), 10)] + rng.standard_normal((num_spk * 10, args.dim)))
    backend = timed(f"PLDA train ({num_spk * 10} utts, LDA {args.lda_dim})", train_plda_backend,
                    train_x, np.repeat(np.arange(num_spk), 10), args.lda_dim)
    counts = rng.integers(1, 4, args.num_utts)

    def plda():
        scorer = backend.scorer()
        side_e = scorer.enroll_side(x, counts)
        return score_pairs(side_e, scorer.test_side(x, side_e.group_values), ei, ti)

    plda_scores = timed("PLDA: prepare + score 1M trials (1-3 enrol utts)", plda)
    labels = np.array([t[2] for t in trials])
    if not labels.any():
        labels[:1000] = True

    def metrics():
        return (compute_eer(plda_scores, labels), compute_min_dcf(plda_scores, labels, 0.01),
                compute_min_dcf(plda_scores, labels, 0.05))

    eer, dcf1, dcf5 = timed("EER + minDCF(0.01) + minDCF(0.05) over 1M", metrics)
    print(f"(random data: PLDA EER {100 * eer:.2f}%, minDCF {dcf1:.4f} / {dcf5:.4f}; "
          f"cosine EER {100 * compute_eer(cosine_scores, labels):.2f}%)")


if __name__ == "__main__":
    main()
