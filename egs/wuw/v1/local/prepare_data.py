#!/usr/bin/env python3
"""Kaldi data dirs and trial lists for WUW Corpus II (8 kHz telephone speech).

usage: python local/prepare_data.py [options] <corpus-root> <data-root>
e.g.:  python local/prepare_data.py ../../../../shared/data/wuw_corpus_ii data

The corpus (``<root>/utts.tsv``, ``<root>/calls/<call>/WUWII<call>_<nnn>.ulaw``,
headerless 8 kHz mu-law) labels calls; its ``speaker`` column links the calls of
one named caller, ``name_group`` puts callers with close names together, and
``named`` = 0 marks a call whose caller is unknown (its own speaker and group).

Utterances: the five keywords of a call (about 0.6 s of speech each) are
joined into one utterance ``<spk>-<call>-kw``; each sentence (about 6 s) is an
utterance ``<spk>-<call>-<nnn>`` of its own. wav.scp decodes with sox pipes, so
nothing is copied. The session of an utterance is its call (utt2session), its
phone type that of the call (utt2phonetype: landlinephone, cellphone,
speakerphone; the channel diagnostics read both).

Split: the held-out speakers are named ones only. Of the named callers with
several calls, every other one in order of their number of calls (the caller
with the most calls trains) up to ``--test-multicall``; of the named callers with
one call, the last ``--test-singlecall`` by id (ids are numbered in a random
order). A held-out speaker takes the other named speakers of its name group with
it, since two speakers of one group may be one person. Everything else, the
unnamed calls included, is the training set (labels read only by the supervised
upper bound and the cluster diagnostics).

Writes:
  <data-root>/train              wav.scp utt2spk spk2utt spk2gender utt2session utt2phonetype
  <data-root>/train_named        the utterances of train's named speakers (the
                                 supervised upper bound's labelled set)
  <data-root>/test               the same files, and two trial lists:
    trials_crosscall             targets from two different calls of one speaker
    trials                       targets from any two utterances of one speaker
  Non-targets pair utterances of different name groups only. Targets are drawn
  evenly over the speakers, none giving more than ``--max-speaker-share`` of
  them (one caller with many calls would otherwise make the list).
"""

import argparse
import os
import shlex
import sys
from collections import defaultdict

import numpy as np

from pyspk.data.corpus_tsv import read_tsv_rows
from pyspk.data.datadir import c_sort_key, trials_from_pairs, utt2spk_to_spk2utt, write_table, write_trials

COLUMNS = ["utt", "speaker", "name_group", "named", "session", "gender", "dialect", "phonetype", "utt_type",
           "keyword_start", "keyword_end", "transcription", "path"]
PHONE_TYPES = ("landlinephone", "cellphone", "speakerphone")
UTT_TYPES = ("keyword", "sentence")
GENDERS = {"male": "m", "female": "f"}
ULAW = "-t ul -r 8000 -c 1"


class CorpusError(ValueError):
    pass


def read_utts(root):
    """The rows of ``<root>/utts.tsv`` as dicts; any malformed row stops with its file and line."""
    path = os.path.join(root, "utts.tsv")
    if not os.path.isfile(path):
        raise CorpusError(f"{path}: no such file (expected the WUW Corpus II layout <root>/utts.tsv, <root>/calls/)")
    rows = []
    for where, row in read_tsv_rows(path, COLUMNS, CorpusError):
        checks = [("named", ("0", "1")), ("phonetype", PHONE_TYPES), ("utt_type", UTT_TYPES),
                  ("gender", tuple(GENDERS))]
        for column, allowed in checks:
            if row[column] not in allowed:
                raise CorpusError(f"{where}: unknown {column} '{row[column]}' "
                                  f"(expected one of {', '.join(allowed)})")
        for column in ("utt", "speaker", "name_group", "session"):
            if not row[column] or any(c.isspace() for c in row[column]) or "-" in row[column]:
                raise CorpusError(f"{where}: {column} '{row[column]}' must be non-empty, without spaces or '-'")
        audio = os.path.join(root, row["path"])
        if not os.path.isfile(audio):
            raise CorpusError(f"{where}: {audio}: no such audio file")
        row["audio"] = os.path.abspath(audio)
        row["where"] = where
        rows.append(row)
    if not rows:
        raise CorpusError(f"{path}: no utterances")
    return rows


def make_utterances(rows):
    """``{utt: {"spk", "group", "named", "call", "phone", "gender", "paths"}}``: a call's keywords joined,
    sentences alone."""
    utts = {}
    for row in sorted(rows, key=lambda r: (r["session"], r["utt"])):
        if row["utt_type"] == "keyword":
            utt = f"{row['speaker']}-{row['session']}-kw"
        else:
            utt = f"{row['speaker']}-{row['session']}-{row['utt'].rsplit('_', 1)[-1]}"
        info = utts.setdefault(utt, {"spk": row["speaker"], "group": row["name_group"], "named": row["named"] == "1",
                                     "call": row["session"], "phone": row["phonetype"],
                                     "gender": GENDERS[row["gender"]], "paths": []})
        for column, key in (("speaker", "spk"), ("name_group", "group"), ("phonetype", "phone")):
            if row[column] != info[key]:
                raise CorpusError(f"{row['where']}: call {row['session']} has {column} '{row[column]}' here and "
                                  f"'{info[key]}' on an earlier row (one call is one caller on one phone)")
        if row["utt_type"] == "sentence" and info["paths"]:
            raise CorpusError(f"{row['where']}: utterance {row['utt']} is listed twice")
        info["paths"].append(row["audio"])
    return utts


def choose_test_speakers(utts, test_multicall, test_singlecall):
    """Held-out named speakers (see the module doc), with the named speakers of their name groups."""
    calls = defaultdict(set)
    group_of = {}
    for info in utts.values():
        if info["named"]:
            calls[info["spk"]].add(info["call"])
            group_of[info["spk"]] = info["group"]
    multi = sorted((s for s in calls if len(calls[s]) > 1), key=lambda s: (-len(calls[s]), s))
    single = sorted(s for s in calls if len(calls[s]) == 1)
    if not 0 <= test_multicall <= len(multi) // 2:
        raise CorpusError(f"--test-multicall must be between 0 and {len(multi) // 2} (every other one of the "
                          f"{len(multi)} named speakers with several calls), got {test_multicall}")
    if not 0 <= test_singlecall < len(single):
        raise CorpusError(f"--test-singlecall must be between 0 and {len(single) - 1} (the corpus has "
                          f"{len(single)} named speakers with one call), got {test_singlecall}")
    chosen = set(multi[1::2][:test_multicall]) | set(single[len(single) - test_singlecall:])
    groups = {group_of[s] for s in chosen}
    return {s for s in calls if group_of[s] in groups}


def balanced_targets(pairs_by_spk, num_target, max_share, rng):
    """At most ``num_target`` target pairs drawn evenly over the speakers, none giving more than
    ``max_share`` of them (a caller with many calls would otherwise make the list) or than an even
    split of ``num_target``, whichever is more (with fewer than 1 / max_share speakers, the share
    cannot hold)."""
    sizes = {spk: len(pairs) for spk, pairs in pairs_by_spk.items()}
    total = min(num_target, sum(sizes.values()))
    even_share = -(-num_target // max(len(sizes), 1))  # a cap never below an even split: few speakers keep theirs
    while True:  # the largest total whose per-speaker cap (max_share of it) still yields it
        cap = max(even_share, int(max_share * total))
        capped = min(total, sum(min(n, cap) for n in sizes.values()))
        if capped == total:
            break
        total = capped
    chosen = []
    remaining = total
    order = sorted(sizes, key=lambda s: (sizes[s], s))
    for i, spk in enumerate(order):
        take = min(sizes[spk], cap, remaining // (len(order) - i))
        chosen.extend(pairs_by_spk[spk][j] for j in rng.choice(sizes[spk], take, replace=False))
        remaining -= take
    return chosen


def make_trials(utts, cross_call, num_trials, target_fraction, max_share, seed):
    """Sorted ``(enroll, test, is_target)``; non-targets across name groups, targets as ``cross_call`` says."""
    names = sorted(utts, key=c_sort_key)
    spk = np.array([utts[u]["spk"] for u in names])
    group = np.array([utts[u]["group"] for u in names])
    call = np.array([utts[u]["call"] for u in names])
    first, second = np.triu_indices(len(names), k=1)
    same_spk = spk[first] == spk[second]
    if cross_call:
        same_spk &= call[first] != call[second]
    targets = defaultdict(list)
    for pair in np.flatnonzero(same_spk):
        targets[spk[first[pair]]].append(pair)
    nontargets = np.flatnonzero(group[first] != group[second])
    rng = np.random.default_rng(seed)
    chosen_targets = balanced_targets(targets, round(num_trials * target_fraction), max_share, rng)
    num_nontarget = min(num_trials - round(num_trials * target_fraction), len(nontargets))
    return trials_from_pairs(names, first, second, chosen_targets,
                             rng.choice(nontargets, num_nontarget, replace=False), rng)


def wav_entry(paths):
    """A sox pipe that decodes (and joins) the mu-law files."""
    return "sox " + " ".join(f"{ULAW} {shlex.quote(p)}" for p in paths) + " -t wav - |"


def write_data_dir(path, utts):
    os.makedirs(path, exist_ok=True)
    write_table(os.path.join(path, "wav.scp"), {u: wav_entry(info["paths"]) for u, info in utts.items()})
    utt2spk = {u: info["spk"] for u, info in utts.items()}
    write_table(os.path.join(path, "utt2spk"), utt2spk)
    write_table(os.path.join(path, "spk2utt"), utt2spk_to_spk2utt(utt2spk))
    write_table(os.path.join(path, "spk2gender"), {info["spk"]: info["gender"] for info in utts.values()})
    write_table(os.path.join(path, "utt2session"), {u: info["call"] for u, info in utts.items()})
    write_table(os.path.join(path, "utt2phonetype"), {u: info["phone"] for u, info in utts.items()})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test-multicall", type=int, default=13,
                        help="held-out named speakers with several calls, every other one (%(default)s)")
    parser.add_argument("--test-singlecall", type=int, default=12,
                        help="held-out named speakers with one call, the last ones by id (%(default)s)")
    parser.add_argument("--num-trials", type=int, default=30000, help="trials in each list, at most (%(default)s)")
    parser.add_argument("--target-fraction", type=float, default=0.2, help="share of targets (%(default)s)")
    parser.add_argument("--max-speaker-share", type=float, default=0.2,
                        help="most targets of a list one speaker may give (%(default)s)")
    parser.add_argument("--seed", type=int, default=777, help="trial sampling (%(default)s)")
    parser.add_argument("corpus_root")
    parser.add_argument("data_root")
    args = parser.parse_args(argv)
    try:
        for name in ("target_fraction", "max_speaker_share"):
            if not 0 < getattr(args, name) <= 1:
                raise CorpusError(f"--{name.replace('_', '-')} must be in (0, 1], got {getattr(args, name)}")
        utts = make_utterances(read_utts(args.corpus_root))
        test_speakers = choose_test_speakers(utts, args.test_multicall, args.test_singlecall)
        train = {u: v for u, v in utts.items() if v["spk"] not in test_speakers}
        test = {u: v for u, v in utts.items() if v["spk"] in test_speakers}
        lists = {name: make_trials(test, cross_call, args.num_trials, args.target_fraction,
                                               args.max_speaker_share, args.seed)
                 for name, cross_call in (("trials_crosscall", True), ("trials", False))}
        for name, trials in lists.items():
            if not any(t for _, _, t in trials) or all(t for _, _, t in trials):
                raise CorpusError(f"{name}: the held-out speakers give no target or no non-target trial "
                                  "(raise --test-multicall)")
    except CorpusError as err:
        print(f"{sys.argv[0]}: {err}", file=sys.stderr)
        sys.exit(1)
    write_data_dir(os.path.join(args.data_root, "train"), train)
    write_data_dir(os.path.join(args.data_root, "train_named"), {u: v for u, v in train.items() if v["named"]})
    write_data_dir(os.path.join(args.data_root, "test"), test)
    for name, trials in lists.items():
        write_trials(os.path.join(args.data_root, "test", name), trials)
    count = {part: len({v["spk"] for v in d.values()}) for part, d in (("train", train), ("test", test))}
    named = len({v["spk"] for v in train.values() if v["named"]})
    summary = ", ".join(f"{name} {len(t)} ({sum(x for _, _, x in t)} target)" for name, t in lists.items())
    print(f"{sys.argv[0]}: train {len(train)} utterances of {count['train']} speakers ({named} named), "
          f"test {len(test)} of {count['test']}; {summary}", file=sys.stderr)


if __name__ == "__main__":
    main()
