"""Average the backbones of the last N checkpoints of a training run into one backbone file.

Usage: python -m pyspk.bin.average_checkpoints [--num N] <exp-dir> <out.pt>
Reads <exp-dir>/checkpoints/ckpt-e*-s*.pt (a run keeps train.keep_checkpoints
of them: set it to at least N), averages the weights of each backbone over
the N with the most steps (WeSpeaker averages 10) and writes <out.pt> in the
final.pt layout, which steps/extract_embeddings.sh reads.
e.g.: python -m pyspk.bin.average_checkpoints --num 5 exp/dino exp/dino/avg5.pt
"""

import argparse
import os
import sys

from pyspk.models import BackboneFileError, write_backbone_file
from pyspk.train.checkpoint import average_backbones, list_checkpoints


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=5, help="number of most recent checkpoints to average (default 5)")
    parser.add_argument("exp_dir", help="experiment dir with checkpoints/")
    parser.add_argument("out", help="backbone file to write")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    ckpt_dir = os.path.join(args.exp_dir, "checkpoints")
    found = [path for _, path in list_checkpoints(ckpt_dir)]
    if args.num < 1:
        sys.exit("average_checkpoints: error: --num must be at least 1")
    if len(found) < args.num:
        sys.exit(f"average_checkpoints: error: {ckpt_dir} has {len(found)} checkpoint(s), --num {args.num} asked "
                 "(raise train.keep_checkpoints)")
    paths = found[-args.num:]
    try:
        content = average_backbones(paths)
    except BackboneFileError as e:
        sys.exit(f"average_checkpoints: error: {e}")
    write_backbone_file(args.out, content)
    print(f"average_checkpoints: averaged {', '.join(os.path.basename(p) for p in paths)} into {args.out}")


if __name__ == "__main__":
    main()
