#!/usr/bin/env python3
"""Kaldi data dirs and trials for VoxCeleb1 (the layout of vox1_dev_wav.zip + vox1_test_wav.zip).

Usage: python local/make_voxceleb1.py [--lists o,e,h] [--trials-dir DIR] <voxceleb1-root> <data-root>
e.g.:  python local/make_voxceleb1.py /export/corpora/VoxCeleb1 data

Reads <root>/wav/<spk>/<youtube-id>/<seg>.wav and writes:
  <data-root>/voxceleb1       all speakers (dev + test), trials_o, trials_e, trials_h
  <data-root>/voxceleb1_dev   the 1,211 development speakers
  <data-root>/voxceleb1_test  the 40 test speakers, trials (VoxCeleb1-O)
The dev/test split comes from <root>/vox1_meta.csv ("Set" column); without
it, the speakers of the VoxCeleb1-O list are the test set. Trial lists are the
cleaned ones (veri_test2.txt, list_test_all2.txt, list_test_hard2.txt, lines
"1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav"), converted to
Kaldi trials "<enroll-utt> <test-utt> target|nontarget" in the same order.
"""

import argparse
import logging
import os
import sys

from voxceleb_lib import PrepError, gender_of, read_meta, scan_corpus, write_data_dir

from pyspk.data.datadir import DataDirError, iter_lines, write_trials
from pyspk.logutil import setup_logging

TRIAL_LISTS = {  # name -> (official cleaned list, output file in data/voxceleb1)
    "o": ("veri_test2.txt", "trials_o"),
    "e": ("list_test_all2.txt", "trials_e"),
    "h": ("list_test_hard2.txt", "trials_h"),
}


def convert_trials(list_path, rel2utt):
    """``[(enroll, test, is_target)]`` from an official list; unknown files are an error."""
    trials, missing = [], []
    for lineno, fields in iter_lines(list_path):
        if len(fields) != 3 or fields[0] not in ("0", "1"):
            raise DataDirError(list_path, lineno, "expected '<1|0> <spk/video/seg.wav> <spk/video/seg.wav>'")
        pair = []
        for rel in fields[1:]:
            if rel not in rel2utt:
                missing.append((lineno, rel))
            pair.append(rel2utt.get(rel))
        trials.append((pair[0], pair[1], fields[0] == "1"))
    if missing:
        lineno, rel = missing[0]
        raise DataDirError(list_path, lineno, f"'{rel}' is not in the corpus ({len(missing)} missing "
                                              "file reference(s) in all; is the download complete?)")
    if not trials:
        raise DataDirError(list_path, 0, "empty trial list")
    return trials


def split_speakers(root, speakers, o_list):
    """(test speakers, spk2gender) from vox1_meta.csv, else test = speakers of the O list."""
    meta = read_meta(os.path.join(root, "vox1_meta.csv"), "\t")
    if meta:
        test = {row[0] for row in meta if len(row) >= 5 and row[4] == "test"}
        genders = {row[0]: gender_of(row[2]) for row in meta if len(row) >= 3 and gender_of(row[2])}
        return test & speakers, genders
    logging.info("no vox1_meta.csv: taking the speakers of %s as the test set", o_list)
    test = set()
    for _, fields in iter_lines(o_list):
        test.update(rel.split("/", 1)[0] for rel in fields[1:])
    return test & speakers, {}


def prepare(root, data_root, lists, trials_dir):
    utts = scan_corpus(os.path.join(root, "wav"), ".wav")
    wav_scp = {utt: path for utt, (_, _, path) in utts.items()}
    utt2spk = {utt: spk for utt, (spk, _, _) in utts.items()}
    rel2utt = {rel: utt for utt, (_, rel, _) in utts.items()}
    list_paths = {name: os.path.join(trials_dir, TRIAL_LISTS[name][0]) for name in ("o", *lists)}
    for path in list_paths.values():
        if not os.path.isfile(path):
            raise PrepError(f"{path}: no such trial list (the download stage fetches it)")

    test_spks, genders = split_speakers(root, set(utt2spk.values()), list_paths["o"])
    if not test_spks:
        raise PrepError(f"{root}: none of the test speakers is in the corpus")
    converted = {name: convert_trials(path, rel2utt) for name, path in list_paths.items()}
    outside = [t for t in converted["o"] if utt2spk[t[0]] not in test_spks or utt2spk[t[1]] not in test_spks]
    if outside:
        raise PrepError(f"{list_paths['o']}: {len(outside)} trial(s) use non-test speakers, "
                        f"e.g. '{outside[0][0]} {outside[0][1]}'; is vox1_meta.csv the VoxCeleb1 one?")
    logging.info("VoxCeleb1: %d utterances, %d speakers (%d test)", len(utts), len(set(utt2spk.values())),
                 len(test_spks))

    all_dir = os.path.join(data_root, "voxceleb1")
    write_data_dir(all_dir, wav_scp, utt2spk, genders)
    for name, test_side in (("voxceleb1_dev", False), ("voxceleb1_test", True)):
        keep = [u for u in utts if (utt2spk[u] in test_spks) == test_side]
        write_data_dir(os.path.join(data_root, name), {u: wav_scp[u] for u in keep},
                       {u: utt2spk[u] for u in keep}, genders)
    write_trials(os.path.join(data_root, "voxceleb1_test", "trials"), converted["o"])
    for name in lists:
        trials = converted[name]
        write_trials(os.path.join(all_dir, TRIAL_LISTS[name][1]), trials)
        logging.info("VoxCeleb1-%s: %d trials (%d target) -> %s", name.upper(), len(trials),
                     sum(t[2] for t in trials), os.path.join(all_dir, TRIAL_LISTS[name][1]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lists", default="o,e,h", help="trial lists to convert into data/voxceleb1 (o,e,h)")
    parser.add_argument("--trials-dir", default=None, help="where the official lists are (default: the root)")
    parser.add_argument("root")
    parser.add_argument("data_root")
    args = parser.parse_args(argv)
    setup_logging()
    lists = [x for x in args.lists.split(",") if x]
    unknown = [x for x in lists if x not in TRIAL_LISTS]
    if unknown:
        parser.error(f"unknown trial list(s) {unknown}; known: o, e, h")
    try:
        root = os.path.abspath(args.root)
        prepare(root, args.data_root, lists, args.trials_dir or root)
    except (PrepError, DataDirError) as e:
        print(f"{os.path.basename(sys.argv[0])}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
