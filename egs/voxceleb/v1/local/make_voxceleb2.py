#!/usr/bin/env python3
"""Kaldi data dir for VoxCeleb2 dev or test (the layout of vox2_dev_aac.zip / vox2_test_aac.zip).

Usage: python local/make_voxceleb2.py <voxceleb2-root> <dev|test> <data-dir>
e.g.:  python local/make_voxceleb2.py /export/corpora/VoxCeleb2 dev data/voxceleb2_dev

Reads <root>/<set>/aac/<spk>/<youtube-id>/<seg>.m4a; wav.scp decodes them on
the fly with Kaldi's extended filename
  <utt> ffmpeg -v 8 -i <path> -f wav -acodec pcm_s16le - |
(ffmpeg must be on PATH when features are made). A copy already converted to
<root>/<set>/wav/.../<seg>.wav is used directly when there is no aac dir.

utt2spk holds the true speakers because Kaldi data dirs need one and they are
on disk anyway; the self-supervised recipe never trains on them (DINO ignores
speakers; pseudo-label rounds replace them with cluster ids). They only feed
the clustering diagnostics (NMI, purity).
"""

import argparse
import logging
import os
import sys

from voxceleb_lib import PrepError, gender_of, m4a_pipe, read_meta, scan_corpus, write_data_dir

from pyspk.data.datadir import DataDirError
from pyspk.logutil import setup_logging


def prepare(root, subset, out_dir):
    aac_root = os.path.join(root, subset, "aac")
    wav_root = os.path.join(root, subset, "wav")
    if os.path.isdir(aac_root):
        utts = scan_corpus(aac_root, ".m4a")
        wav_scp = {utt: m4a_pipe(path) for utt, (_, _, path) in utts.items()}
    elif os.path.isdir(wav_root):
        utts = scan_corpus(wav_root, ".wav")
        wav_scp = {utt: path for utt, (_, _, path) in utts.items()}
    else:
        raise PrepError(f"{root}: neither {subset}/aac nor {subset}/wav exists (is this the VoxCeleb2 root?)")
    utt2spk = {utt: spk for utt, (spk, _, _) in utts.items()}
    genders = {row[0]: gender_of(row[2]) for row in read_meta(os.path.join(root, "vox2_meta.csv"), ",")
               if len(row) >= 3 and gender_of(row[2])}
    write_data_dir(out_dir, wav_scp, utt2spk, genders)
    logging.info("VoxCeleb2 %s: %d utterances, %d speakers -> %s", subset, len(utts), len(set(utt2spk.values())),
                 out_dir)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root")
    parser.add_argument("subset", choices=["dev", "test"])
    parser.add_argument("out_dir")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        prepare(os.path.abspath(args.root), args.subset, args.out_dir)
    except (PrepError, DataDirError) as e:
        print(f"{os.path.basename(sys.argv[0])}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
