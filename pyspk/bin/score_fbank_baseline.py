#!/usr/bin/env python3
"""No-training baseline: cosine scoring of per-utterance fbank statistics.

usage: python -m pyspk.bin.score_fbank_baseline [--stats mean+std|std|mean] [--vad auto|yes|no] [--center]
                                    [--scores FILE] <data-dir> <trials>
e.g.:  python -m pyspk.bin.score_fbank_baseline data/test data/test/trials

Each utterance of the trials becomes the mean and/or standard deviation over
frames of its features (feats.scp, read with kaldiio; only the frames that
vad.scp marks as speech when --vad allows it), and each trial is scored by
the cosine similarity of the two vectors. Prints EER and minDCF
(p_target=0.01) on stdout; --scores also writes Kaldi scores
("enroll test score").

--center first subtracts the mean vector of the utterances in the trials.
That scores worse on the demo corpus: a level change adds the same constant
to every log-mel mean, which after centring dominates the direction, while
uncentred vectors keep their spectral shape. --stats std drops the mean
(the part that a channel EQ shifts) and keeps only the spread of each band.
"""

import argparse
import sys

import kaldiio
import numpy as np
from tqdm import tqdm

from pyspk.data.arkio import load_matrix
from pyspk.data.datadir import DataDir, DataDirError, read_trials
from pyspk.fileutil import atomic_open
from pyspk.metrics import compute_eer, compute_min_dcf


def utterance_stats(feats, stats):
    mean, std = feats.mean(axis=0), feats.std(axis=0)
    return {"mean+std": np.concatenate([mean, std]), "std": std, "mean": mean}[stats]


def load_stats(data_dir, utts, stats, vad):
    """Stats vectors (one row per utterance of ``utts``) from the data dir's feats.scp."""
    feats_scp = data_dir.feats_scp()
    use_vad = vad == "yes" or (vad == "auto" and data_dir.has("vad.scp"))
    vad_scp = kaldiio.load_scp(data_dir.file("vad.scp")) if use_vad else None
    missing = [u for u in utts if u not in feats_scp]
    if missing:
        raise DataDirError(data_dir.file("feats.scp"), 0,
                           f"{len(missing)} utterances of the trials are missing, e.g. '{missing[0]}'")
    rows = []
    for utt in tqdm(utts, desc="stats", mininterval=5, file=sys.stderr):
        feats = np.asarray(load_matrix(feats_scp[utt], utt=utt), dtype=np.float64)
        if vad_scp is not None:
            if utt not in vad_scp:
                raise DataDirError(data_dir.file("vad.scp"), 0, f"no entry for '{utt}'")
            voiced = np.asarray(vad_scp[utt]) > 0.5
            if len(voiced) != len(feats):
                raise DataDirError(data_dir.file("vad.scp"), 0,
                                   f"'{utt}' has {len(voiced)} VAD frames but {len(feats)} feature frames")
            if voiced.sum() >= 2:  # an all-silent decision would leave nothing to average
                feats = feats[voiced]
        rows.append(utterance_stats(feats, stats))
    return np.stack(rows), use_vad


def cosine_scores(vectors, enroll_idx, test_idx, center=False):
    if center:
        vectors = vectors - vectors.mean(axis=0)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return np.einsum("ij,ij->i", unit[enroll_idx], unit[test_idx])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stats", choices=("mean+std", "std", "mean"), default="mean+std",
                        help="per-utterance statistics to score (default: %(default)s)")
    parser.add_argument("--vad", choices=("auto", "yes", "no"), default="auto",
                        help="keep only speech frames from vad.scp; auto: when the data dir has one")
    parser.add_argument("--center", action="store_true", help="subtract the mean vector before scoring")
    parser.add_argument("--scores", help="also write the trial scores here (Kaldi format)")
    parser.add_argument("data_dir", help="data dir with feats.scp")
    parser.add_argument("trials", help="Kaldi trials: enroll test target|nontarget")
    args = parser.parse_args(argv)
    try:
        trials = read_trials(args.trials)
        if not trials:
            raise DataDirError(args.trials, 0, "no trials")
        utts = sorted({u for enroll, test, _ in trials for u in (enroll, test)})
        index = {u: i for i, u in enumerate(utts)}
        vectors, used_vad = load_stats(DataDir(args.data_dir), utts, args.stats, args.vad)
        enroll_idx = np.array([index[e] for e, _, _ in trials])
        test_idx = np.array([index[t] for _, t, _ in trials])
        labels = np.array([is_target for _, _, is_target in trials])
        scores = cosine_scores(vectors, enroll_idx, test_idx, args.center)
        eer = compute_eer(scores, labels)
        min_dcf = compute_min_dcf(scores, labels, p_target=0.01)
    except (DataDirError, ValueError, OSError) as err:
        print(f"{sys.argv[0]}: {err}", file=sys.stderr)
        sys.exit(1)
    if args.scores:
        with atomic_open(args.scores, "w") as f:
            f.writelines(f"{e} {t} {s:.6f}\n" for (e, t, _), s in zip(trials, scores, strict=True))
    name = f"fbank {args.stats}{' vad' if used_vad else ''}{' centred' if args.center else ''}"
    print(f"baseline ({name}) cosine: EER {100 * eer:.2f}%  "
          f"minDCF(p=0.01) {min_dcf:.4f}  [{len(trials)} trials, {int(labels.sum())} target]")


if __name__ == "__main__":
    main()
