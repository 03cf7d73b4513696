#!/usr/bin/env python3
"""Kaldi data dirs and cross-session trials for the Arabic Speech Commands corpus.

usage: python local/prepare_data.py [options] <corpus-root> <data-root>
e.g.:  python local/prepare_data.py ../../../../shared/data/arabic_speech_commands data

The corpus holds one-second keywords, ``<root>/dataset/<keyword>/<spk>_NO_<round>.flac``:
each speaker read every keyword once per round, and a round is one recording
session. An utterance here joins ``--keywords-per-utt`` keywords of one speaker
and one round (a ``sox ... |`` pipe in wav.scp, so no audio is copied; keyword folders
such as "zoom in" hold spaces, so the paths are shell-quoted); the
keyword order within each speaker and round is shuffled with ``--seed`` so that
utterances of different speakers do not share their words in step.

Writes:
  <data-root>/train   the first speakers (sorted ids), whose labels only the
                      supervised upper bound and the cluster diagnostics read
  <data-root>/test    the last ``--test-speakers`` speakers, and
  <data-root>/test/trials  target trials only across rounds (cross-session),
                      non-target trials between any two utterances of different
                      speakers, ``--num-trials`` in all, ``--target-fraction`` target
Each dir also has utt2session (utterance -> <spk>-r<round>).
"""

import argparse
import os
import re
import shlex
import sys

import numpy as np

from pyspk.data.datadir import c_sort_key, trials_from_pairs, utt2spk_to_spk2utt, write_table, write_trials

CLIP = re.compile(r"^(\d+)_NO_(\d+)\.flac$")


class CorpusError(ValueError):
    pass


def scan_corpus(root):
    """``{(spk, round): {keyword: path}}`` from ``<root>/dataset``; a clip of another name is an error."""
    dataset = os.path.join(root, "dataset")
    if not os.path.isdir(dataset):
        raise CorpusError(f"{dataset}: no such directory (expected <root>/dataset/<keyword>/<spk>_NO_<round>.flac)")
    clips = {}
    for keyword in sorted(os.listdir(dataset)):
        folder = os.path.join(dataset, keyword)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            match = CLIP.match(name)
            if not match:
                raise CorpusError(f"{os.path.join(folder, name)}: not a <speaker>_NO_<round>.flac clip")
            clips.setdefault(match.groups(), {})[keyword] = os.path.abspath(os.path.join(folder, name))
    if not clips:
        raise CorpusError(f"{dataset}: no clips found")
    return clips


def make_utterances(clips, keywords_per_utt, seed):
    """``{utt: (spk, session, [paths])}``; a round's last few keywords that do not fill an utterance are left out."""
    utts = {}
    for (spk, rnd), by_keyword in sorted(clips.items()):
        keywords = sorted(by_keyword)
        # One generator per speaker and round: the grouping does not depend on which other clips exist.
        rng = np.random.default_rng([seed, int(spk), int(rnd)])
        order = [keywords[i] for i in rng.permutation(len(keywords))]
        for index in range(len(order) // keywords_per_utt):
            group = order[index * keywords_per_utt:(index + 1) * keywords_per_utt]
            utt = f"{spk}-r{rnd}-u{index:02d}"
            utts[utt] = (spk, f"{spk}-r{rnd}", [by_keyword[k] for k in group])
    return utts


def cross_session_trials(utts, num_trials, target_fraction, seed):
    """Sorted ``(enroll, test, is_target)``: targets across sessions, non-targets across speakers."""
    names = sorted(utts, key=c_sort_key)
    _, spk = np.unique([utts[u][0] for u in names], return_inverse=True)
    _, session = np.unique([utts[u][1] for u in names], return_inverse=True)
    first, second = np.triu_indices(len(names), k=1)
    same_spk = spk[first] == spk[second]
    targets = np.flatnonzero(same_spk & (session[first] != session[second]))
    nontargets = np.flatnonzero(~same_spk)
    rng = np.random.default_rng(seed)
    num_target = min(round(num_trials * target_fraction), len(targets))
    num_nontarget = min(num_trials - num_target, len(nontargets))
    chosen_targets = rng.choice(targets, num_target, replace=False)
    return trials_from_pairs(names, first, second, chosen_targets,
                             rng.choice(nontargets, num_nontarget, replace=False), rng)


def write_data_dir(path, utts):
    os.makedirs(path, exist_ok=True)
    write_table(os.path.join(path, "wav.scp"),
                {u: "sox " + " ".join(map(shlex.quote, paths)) + " -t wav - |" for u, (_, _, paths) in utts.items()})
    utt2spk = {u: spk for u, (spk, _, _) in utts.items()}
    write_table(os.path.join(path, "utt2spk"), utt2spk)
    write_table(os.path.join(path, "spk2utt"), utt2spk_to_spk2utt(utt2spk))
    write_table(os.path.join(path, "utt2session"), {u: session for u, (_, session, _) in utts.items()})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keywords-per-utt", type=int, default=4, help="keywords joined per utterance (%(default)s)")
    parser.add_argument("--test-speakers", type=int, default=8, help="held-out speakers (%(default)s)")
    parser.add_argument("--speakers", type=int, default=0,
                        help="use only the first N speakers (sorted ids; 0: all), e.g. for a quick test")
    parser.add_argument("--rounds", type=int, default=0, help="use only the first N rounds (0: all)")
    parser.add_argument("--num-trials", type=int, default=30000, help="trials in data/test/trials (%(default)s)")
    parser.add_argument("--target-fraction", type=float, default=0.2, help="share of targets (%(default)s)")
    parser.add_argument("--seed", type=int, default=777, help="keyword order and trial sampling (%(default)s)")
    parser.add_argument("corpus_root")
    parser.add_argument("data_root")
    args = parser.parse_args(argv)
    try:
        if args.keywords_per_utt < 1:
            raise CorpusError(f"--keywords-per-utt must be at least 1, got {args.keywords_per_utt}")
        clips = scan_corpus(args.corpus_root)
        speakers = sorted({spk for spk, _ in clips})
        rounds = sorted({rnd for _, rnd in clips})
        if args.speakers:
            speakers = speakers[:args.speakers]
        if args.rounds:
            rounds = rounds[:args.rounds]
        if not 1 <= args.test_speakers < len(speakers):
            raise CorpusError(f"--test-speakers must be between 1 and {len(speakers) - 1} "
                              f"(the corpus has {len(speakers)} speakers), got {args.test_speakers}")
        clips = {key: value for key, value in clips.items() if key[0] in speakers and key[1] in rounds}
        utts = make_utterances(clips, args.keywords_per_utt, args.seed)
        test_speakers = set(speakers[-args.test_speakers:])
        train = {u: v for u, v in utts.items() if v[0] not in test_speakers}
        test = {u: v for u, v in utts.items() if v[0] in test_speakers}
        trials = cross_session_trials(test, args.num_trials, args.target_fraction, args.seed)
        if not any(t for _, _, t in trials) or all(t for _, _, t in trials):
            raise CorpusError("the test set needs two speakers and two rounds for target and non-target trials")
    except CorpusError as err:
        print(f"{sys.argv[0]}: {err}", file=sys.stderr)
        sys.exit(1)
    write_data_dir(os.path.join(args.data_root, "train"), train)
    write_data_dir(os.path.join(args.data_root, "test"), test)
    write_trials(os.path.join(args.data_root, "test", "trials"), trials)
    num_target = sum(t for _, _, t in trials)
    print(f"{sys.argv[0]}: train {len(train)} utterances of {len(speakers) - len(test_speakers)} speakers, "
          f"test {len(test)} of {len(test_speakers)}; {len(trials)} trials ({num_target} cross-session target)",
          file=sys.stderr)


if __name__ == "__main__":
    main()
