#!/usr/bin/env python3
"""Copy a data dir of the embedded corpus and add utt2label for a transfer task.

Usage: local/make_labels.py [--label-type family|lang|gender] <src-data-dir> <dst-data-dir>
  family  language family of utt2lang (germanic, romance, balto-slavic, other)
  lang    utt2lang as it is (about 50 classes, few speakers each: hard)
  gender  spk2gender of the utterance's speaker
The corpus splits train and test by speaker, so every task is speaker-independent.
e.g.: local/make_labels.py --label-type family ../../data/train data/train_family
"""

import argparse
import os
import shutil
import sys

from pyspk.data.datadir import DataDir, DataDirError, read_kv, write_table

# Families of the espeak-ng languages the corpus uses (local/synth_corpus.py LANGUAGES).
FAMILIES = {
    "germanic": "af da de en-029 en-gb en-gb-scotland en-us is lb nb nl sv",
    "romance": "an ca eo es es-419 fr-be fr-fr ia io it la pt pt-br ro",
    "balto-slavic": "cs hr lt lv pl sk sl",
    "other": "az cy et eu fi ga gd hu id ms mt sq sw tn tr uz vi",
}
FAMILY_OF = {lang: family for family, langs in FAMILIES.items() for lang in langs.split()}
COPIED = ("wav.scp", "feats.scp", "vad.scp", "utt2spk", "spk2utt", "utt2num_frames", "utt2dur", "utt2lang",
          "spk2gender", "segments")


def labels(src, label_type):
    data = DataDir(src)
    if label_type == "gender":
        gender = read_kv(data.file("spk2gender"))
        return {utt: gender[spk] for utt, spk in data.utt2spk().items()}
    path = data.file("utt2lang")
    langs = read_kv(path)
    if label_type == "lang":
        return langs
    for lineno, (utt, lang) in enumerate(langs.items(), 1):
        if lang not in FAMILY_OF:
            raise DataDirError(path, lineno, f"language '{lang}' of '{utt}' has no family in local/make_labels.py")
    return {utt: FAMILY_OF[lang] for utt, lang in langs.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label-type", choices=("family", "lang", "gender"), default="family")
    parser.add_argument("src")
    parser.add_argument("dst")
    args = parser.parse_args(argv)
    try:
        table = labels(args.src, args.label_type)
    except (DataDirError, KeyError, FileNotFoundError) as e:
        print(f"make_labels.py: error: {e}", file=sys.stderr)
        sys.exit(1)
    os.makedirs(args.dst, exist_ok=True)
    for name in COPIED:
        if os.path.isfile(os.path.join(args.src, name)):
            shutil.copyfile(os.path.join(args.src, name), os.path.join(args.dst, name))
    write_table(os.path.join(args.dst, "utt2label"), table)
    counts = {}
    for label in table.values():
        counts[label] = counts.get(label, 0) + 1
    print(f"make_labels.py: {args.dst}: {len(table)} utterances, "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
