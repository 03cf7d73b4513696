#!/usr/bin/env python3
"""Make a Kaldi trials list from a data dir's utt2spk.

usage: python local/make_trials.py [--num-trials 12000] [--target-fraction 0.5] [--seed 777]
                                   <data-dir> <trials-out>
e.g.:  python local/make_trials.py data/test data/test/trials

Draws distinct unordered utterance pairs (never an utterance with itself):
about num-trials * target-fraction same-speaker pairs ("target") and the rest
from different speakers ("nontarget"), each kind capped at the pairs that
exist. Which utterance enrolls is random. The list is sorted (C order) and a
function of the seed and utt2spk alone.
"""

import argparse
import sys

import numpy as np

from pyspk.data.datadir import DataDir, DataDirError, c_sort_key, write_trials


def sample_trials(utt2spk, num_trials=12000, target_fraction=0.5, seed=777):
    """Return sorted ``(enroll, test, is_target)`` triples."""
    if not 0.0 <= target_fraction <= 1.0:
        raise ValueError(f"target fraction must be in [0, 1], got {target_fraction}")
    rng = np.random.default_rng(seed)
    utts = sorted(utt2spk, key=c_sort_key)
    n = len(utts)
    _, spk_index = np.unique([utt2spk[u] for u in utts], return_inverse=True)
    spk_index = spk_index.astype(np.int64)

    # Target pairs: all same-speaker pairs, then a random subset.
    order = np.argsort(spk_index, kind="stable")
    bounds = np.flatnonzero(np.diff(spk_index[order])) + 1
    target_codes = []
    for members in np.split(order, bounds):
        i, j = np.triu_indices(len(members), k=1)
        target_codes.append(members[i] * n + members[j])
    target_codes = np.concatenate(target_codes) if target_codes else np.zeros(0, np.int64)
    num_target = min(round(num_trials * target_fraction), len(target_codes))
    target_codes = rng.choice(target_codes, num_target, replace=False) if num_target else target_codes[:0]

    # Non-target pairs: enumerate when few exist, else rejection-sample random pairs.
    counts = np.bincount(spk_index)
    available = n * (n - 1) // 2 - int((counts * (counts - 1) // 2).sum())
    num_nontarget = min(num_trials - num_target, available)
    if num_nontarget * 2 >= available:
        i, j = np.triu_indices(n, k=1)
        cross = spk_index[i] != spk_index[j]
        nontarget_codes = rng.choice(i[cross] * n + j[cross], num_nontarget, replace=False)
    else:
        nontarget_codes = np.zeros(0, np.int64)
        while len(nontarget_codes) < num_nontarget:
            a, b = rng.integers(0, n, size=(2, 2 * (num_nontarget - len(nontarget_codes)) + 16))
            keep = spk_index[a] != spk_index[b]
            codes = np.minimum(a, b)[keep] * n + np.maximum(a, b)[keep]
            # Keep first occurrences in draw order so the result depends only on the seed.
            merged = np.concatenate([nontarget_codes, codes])
            _, first = np.unique(merged, return_index=True)
            nontarget_codes = merged[np.sort(first)]
        nontarget_codes = nontarget_codes[:num_nontarget]

    codes = np.concatenate([target_codes, nontarget_codes])
    is_target = np.arange(len(codes)) < len(target_codes)
    first, second = codes // n, codes % n
    swap = rng.random(len(codes)) < 0.5
    enroll = np.where(swap, second, first)
    test = np.where(swap, first, second)
    trials = [(utts[e], utts[t], bool(tar)) for e, t, tar in zip(enroll, test, is_target, strict=True)]
    trials.sort(key=lambda trial: (c_sort_key(trial[0]), c_sort_key(trial[1])))
    return trials


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-trials", type=int, default=12000, help="trials to draw (default: %(default)s)")
    parser.add_argument("--target-fraction", type=float, default=0.5,
                        help="share of target trials (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=777, help="random seed (default: %(default)s)")
    parser.add_argument("data_dir", help="data dir with utt2spk")
    parser.add_argument("trials", help="output trials file")
    args = parser.parse_args(argv)
    try:
        utt2spk = DataDir(args.data_dir).utt2spk()
        trials = sample_trials(utt2spk, args.num_trials, args.target_fraction, args.seed)
        if not any(t for _, _, t in trials) or all(t for _, _, t in trials):
            raise ValueError(f"{args.data_dir}: need at least two speakers, one of them with two utterances")
    except (DataDirError, ValueError) as err:
        print(f"{sys.argv[0]}: {err}", file=sys.stderr)
        sys.exit(1)
    write_trials(args.trials, trials)
    num_target = sum(t for _, _, t in trials)
    print(f"Wrote {args.trials}: {len(trials)} trials, {num_target} target, {len(trials) - num_target} nontarget",
          file=sys.stderr)


if __name__ == "__main__":
    main()
