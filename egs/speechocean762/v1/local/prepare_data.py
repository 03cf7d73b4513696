#!/usr/bin/env python3
"""Kaldi data dirs and trial lists for speechocean762 (16 kHz read English, 200 speakers).

usage: python local/prepare_data.py [options] <corpus-root> <data-root>
e.g.:  python local/prepare_data.py ../../../../shared/data/speechocean762 data

The corpus (``<root>/utts.tsv``: ``utt speaker gender age age_group corpus_split duration
text path``; ``<root>/audio/<speaker>/<utt>.opus``) has one recording session per speaker,
so every trial is cross-utterance: target trials pair two different utterances of one
speaker reading different prompts. wav.scp decodes the Opus files with ffmpeg pipes, so
nothing is copied. Utterance ids are ``<speaker>-<utt>`` (Kaldi sorts them with their
speaker).

Split: ``--test-speakers`` speakers are held out, the same number from each group of age
group (child, adult) x gender, drawn with ``--seed`` from the group's sorted speakers;
every other speaker trains (its labels are read only by the supervised upper bound and
the cluster diagnostics). The training speakers get a fixed order (``--seed``): each
group's speakers shuffled, the groups then taken in turn, so that the first N speakers
of the order (``--train-speakers N`` of run.sh) are as balanced over the groups as the
corpus allows and the subsets are nested (the first 50 are among the first 100).

Writes:
  <data-root>/train                wav.scp utt2spk spk2utt spk2gender
  <data-root>/train_speaker_order  the training speakers, one a line, in the fixed order
  <data-root>/test                 the same files, and two trial lists:
    trials        targets: two utterances of one speaker with different, known prompts
                  (an utterance without a prompt joins non-targets only); non-targets:
                  utterances of two different speakers
    trials_hard   the same targets; non-targets of two speakers of the same gender and
                  age group (as VoxCeleb1-H's share nationality and gender)
"""

import argparse
import os
import shlex
import sys

import numpy as np

from pyspk.data.corpus_tsv import read_tsv_rows
from pyspk.data.datadir import c_sort_key, trials_from_pairs, utt2spk_to_spk2utt, write_table, write_trials
from pyspk.fileutil import atomic_open

COLUMNS = ["utt", "speaker", "gender", "age", "age_group", "corpus_split", "duration", "text", "path"]
GENDERS = {"female": "f", "male": "m"}
AGE_GROUPS = ("child", "adult")
# The groups of the balanced split, in the order the training order takes them in turn.
GROUPS = [(age_group, gender) for age_group in AGE_GROUPS for gender in GENDERS]


class CorpusError(ValueError):
    pass


def check_row(row, where, root):
    """The absolute audio path of one ``utts.tsv`` row; a malformed field stops with ``where`` (file:line)."""
    for column in ("utt", "speaker"):
        if not row[column] or any(c.isspace() for c in row[column]) or "-" in row[column]:
            raise CorpusError(f"{where}: {column} '{row[column]}' must be non-empty, without spaces or '-'")
    for column, allowed in (("gender", tuple(GENDERS)), ("age_group", AGE_GROUPS)):
        if row[column] not in allowed:
            raise CorpusError(f"{where}: unknown {column} '{row[column]}' (expected one of {', '.join(allowed)})")
    try:
        positive = float(row["duration"]) > 0
    except ValueError:
        positive = False
    if not positive:
        raise CorpusError(f"{where}: duration '{row['duration']}' must be a positive number of seconds")
    audio = os.path.join(root, row["path"])
    if not os.path.isfile(audio):
        raise CorpusError(f"{where}: {audio}: no such audio file")
    return os.path.abspath(audio)


def read_utts(root):
    """``{utt id: info}`` from ``<root>/utts.tsv``; a malformed row stops with its file and line."""
    path = os.path.join(root, "utts.tsv")
    if not os.path.isfile(path):
        raise CorpusError(f"{path}: no such file (expected the speechocean762 layout <root>/utts.tsv, "
                          "<root>/audio/<speaker>/<utt>.opus)")
    utts = {}
    speakers = {}
    for where, row in read_tsv_rows(path, COLUMNS, CorpusError):
        audio = check_row(row, where, root)
        speaker = (row["gender"], row["age_group"])
        if speakers.setdefault(row["speaker"], speaker) != speaker:
            raise CorpusError(f"{where}: speaker {row['speaker']} is {' '.join(speaker)} here and "
                              f"{' '.join(speakers[row['speaker']])} on an earlier row")
        utt = f"{row['speaker']}-{row['utt']}"
        if utt in utts:
            raise CorpusError(f"{where}: utterance {row['utt']} is listed twice")
        utts[utt] = {"spk": row["speaker"], "gender": row["gender"], "age_group": row["age_group"],
                     "text": " ".join(row["text"].upper().split()), "audio": audio}
    if not utts:
        raise CorpusError(f"{path}: no utterances")
    return utts


def split_speakers(utts, test_speakers, seed):
    """``(test speakers, training speakers in their fixed order)``, balanced over the groups (module doc)."""
    by_group = {group: sorted({i["spk"] for i in utts.values() if (i["age_group"], i["gender"]) == group})
                for group in GROUPS}
    per_group, rest = divmod(test_speakers, len(GROUPS))
    smallest = min(len(s) for s in by_group.values())
    if rest or not 1 <= per_group < smallest:
        raise CorpusError(f"--test-speakers must be a multiple of {len(GROUPS)} (one share per age group x gender) "
                          f"between {len(GROUPS)} and {len(GROUPS) * (smallest - 1)} (the smallest group has "
                          f"{smallest} speakers), got {test_speakers}")
    test, queues = set(), []
    for index, group in enumerate(GROUPS):
        # One generator per group: a group's draw does not depend on the others.
        shuffled = [by_group[group][i] for i in np.random.default_rng([seed, index]).permutation(len(by_group[group]))]
        test.update(shuffled[:per_group])
        queues.append(shuffled[per_group:])
    order = [queue[i] for i in range(max(map(len, queues))) for queue in queues if i < len(queue)]
    return test, order


def make_trials(utts, num_trials, target_fraction, seed):
    """``{"trials": [...], "trials_hard": [...]}``, sorted ``(enroll, test, is_target)`` (module doc)."""
    names = sorted(utts, key=c_sort_key)
    spk = np.array([utts[u]["spk"] for u in names])
    text = np.array([utts[u]["text"] for u in names])
    group = np.array([f"{utts[u]['age_group']}-{utts[u]['gender']}" for u in names])
    first, second = np.triu_indices(len(names), k=1)
    same_spk = spk[first] == spk[second]
    targets = np.flatnonzero(same_spk & (text[first] != text[second]) & (text[first] != "") & (text[second] != ""))
    rng = np.random.default_rng(seed)
    chosen_targets = rng.choice(targets, min(round(num_trials * target_fraction), len(targets)), replace=False)
    num_nontarget = num_trials - round(num_trials * target_fraction)
    lists = {}
    for name, nontargets in (("trials", np.flatnonzero(~same_spk)),
                             ("trials_hard", np.flatnonzero(~same_spk & (group[first] == group[second])))):
        chosen = rng.choice(nontargets, min(num_nontarget, len(nontargets)), replace=False)
        lists[name] = trials_from_pairs(names, first, second, chosen_targets, chosen, rng)
        if not len(chosen_targets) or not len(chosen):
            raise CorpusError(f"{name}: the held-out speakers give no target or no non-target trial")
    return lists


def write_data_dir(path, utts):
    os.makedirs(path, exist_ok=True)
    write_table(os.path.join(path, "wav.scp"),
                {u: f"ffmpeg -nostdin -loglevel error -i {shlex.quote(info['audio'])} -f wav -ar 16000 -ac 1 - |"
                 for u, info in utts.items()})
    utt2spk = {u: info["spk"] for u, info in utts.items()}
    write_table(os.path.join(path, "utt2spk"), utt2spk)
    write_table(os.path.join(path, "spk2utt"), utt2spk_to_spk2utt(utt2spk))
    write_table(os.path.join(path, "spk2gender"), {info["spk"]: GENDERS[info["gender"]] for info in utts.values()})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test-speakers", type=int, default=48,
                        help="held-out speakers, the same number per age group x gender (%(default)s)")
    parser.add_argument("--num-trials", type=int, default=50000,
                        help="trials in each list; targets are all there are when fewer (%(default)s)")
    parser.add_argument("--target-fraction", type=float, default=0.2, help="share of targets (%(default)s)")
    parser.add_argument("--seed", type=int, default=777, help="split, training order and trial sampling (%(default)s)")
    parser.add_argument("corpus_root")
    parser.add_argument("data_root")
    args = parser.parse_args(argv)
    try:
        if not 0 < args.target_fraction < 1:
            raise CorpusError(f"--target-fraction must be in (0, 1), got {args.target_fraction}")
        utts = read_utts(args.corpus_root)
        test_speakers, order = split_speakers(utts, args.test_speakers, args.seed)
        train = {u: v for u, v in utts.items() if v["spk"] not in test_speakers}
        test = {u: v for u, v in utts.items() if v["spk"] in test_speakers}
        lists = make_trials(test, args.num_trials, args.target_fraction, args.seed)
    except CorpusError as err:
        print(f"{sys.argv[0]}: {err}", file=sys.stderr)
        sys.exit(1)
    write_data_dir(os.path.join(args.data_root, "train"), train)
    write_data_dir(os.path.join(args.data_root, "test"), test)
    for name, trials in lists.items():
        write_trials(os.path.join(args.data_root, "test", name), trials)
    with atomic_open(os.path.join(args.data_root, "train_speaker_order"), "w") as f:
        f.write("".join(f"{spk}\n" for spk in order))
    summary = ", ".join(f"{name} {len(t)} ({sum(x for _, _, x in t)} target)" for name, t in lists.items())
    print(f"{sys.argv[0]}: train {len(train)} utterances of {len(order)} speakers, "
          f"test {len(test)} of {len(test_speakers)}; {summary}", file=sys.stderr)


if __name__ == "__main__":
    main()
