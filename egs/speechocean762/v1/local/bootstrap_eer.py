#!/usr/bin/env python3
"""The confidence of an EER measured on few held-out speakers: a bootstrap over the speakers.

usage: python local/bootstrap_eer.py [options] <utt2spk> <trials> <scores>
e.g.:  python local/bootstrap_eer.py data/test/utt2spk data/test/trials exp/dino/scores/cosine_trials_test

The trials of one voice are not independent, so the unit resampled is the speaker: each of
``--resamples`` draws takes as many speakers as there are, with replacement, and keeps every trial
between two drawn speakers once per pairing of their draws (a target trial once per draw of its
speaker). Prints the EER and the ``--confidence`` interval of the resampled EERs.
"""

import argparse
import sys

import numpy as np

from pyspk.backend.scoring import match_scores_to_trials
from pyspk.data.datadir import read_kv, read_trials
from pyspk.metrics import compute_eer


def speaker_bootstrap(spk_a, spk_b, scores, labels, resamples, seed):
    """EERs of ``resamples`` speaker resamples; ``spk_a``/``spk_b`` index each trial's two speakers."""
    num_speakers = int(max(spk_a.max(), spk_b.max())) + 1
    rng = np.random.default_rng(seed)
    eers = []
    for _ in range(resamples):
        draws = np.bincount(rng.integers(0, num_speakers, num_speakers), minlength=num_speakers)
        weight = np.where(spk_a == spk_b, draws[spk_a], draws[spk_a] * draws[spk_b])
        kept = np.repeat(np.arange(len(labels)), weight)
        eers.append(compute_eer(scores[kept], labels[kept]))
    return np.array(eers)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap draws (%(default)s)")
    parser.add_argument("--confidence", type=float, default=0.9, help="interval's coverage (%(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("utt2spk")
    parser.add_argument("trials")
    parser.add_argument("scores")
    args = parser.parse_args(argv)
    try:
        utt2spk = read_kv(args.utt2spk)
        trials = read_trials(args.trials)
        scores, labels, _ = match_scores_to_trials(trials, args.trials, args.scores)
        speakers = {spk: i for i, spk in enumerate(sorted(set(utt2spk.values())))}
        spk_a = np.array([speakers[utt2spk[e]] for e, _, _ in trials])
        spk_b = np.array([speakers[utt2spk[t]] for _, t, _ in trials])
    except (OSError, KeyError, ValueError) as err:
        print(f"{sys.argv[0]}: {err}", file=sys.stderr)
        sys.exit(1)
    eer = compute_eer(scores, labels)
    eers = speaker_bootstrap(spk_a, spk_b, scores, labels, args.resamples, args.seed)
    tail = 50 * (1 - args.confidence)
    low, high = np.percentile(eers, [tail, 100 - tail])
    print(f"{args.scores}: EER {100 * eer:.2f}%, {args.confidence:.0%} interval over {len(speakers)} speakers "
          f"{100 * low:.2f}-{100 * high:.2f}% ({low / eer - 1:+.0%} / {high / eer - 1:+.0%})")


if __name__ == "__main__":
    main()
