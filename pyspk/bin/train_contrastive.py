"""Train a speaker-embedding backbone with contrastive SSL (NT-Xent over crops, no labels).

Crops of one utterance are positives, crops of other utterances negatives.

Usage: python -m pyspk.bin.train_contrastive --config conf/contrastive_demo.yaml [--device auto]
           [--max-steps N] <data-dir> <exp-dir> [section.key=value ...]

Reads features from <data-dir>/feats.scp (clean utterances; copies named
<utt>-reverb, <utt>-noise, ... or listed in utt2copies feed the crops).
Writes <exp-dir>/config.yaml, checkpoints/, log/train.log, metrics.tsv,
loss.png and final.pt (backbone "encoder").
Re-running the same command resumes from the latest checkpoint; after a
finished run (<exp-dir>/.done) it does nothing. Under torchrun each process
trains on its shard of every epoch (DDP).

e.g.: python -m pyspk.bin.train_contrastive --config conf/contrastive_demo.yaml data/train exp/contrastive \
          contrastive.temperature=0.2
"""

import argparse
import logging
import sys

from pyspk.config import ConfigError, load_config
from pyspk.data.datadir import DataDirError
from pyspk.models import BackboneFileError
from pyspk.ssl.contrastive import ContrastiveObjective
from pyspk.train.loop import Trainer


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML training config (e.g. conf/contrastive_demo.yaml)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="stop after this many steps in total, with a checkpoint (re-run to continue)")
    parser.add_argument("data_dir")
    parser.add_argument("exp_dir")
    parser.add_argument("overrides", nargs="*", help="config overrides, section.key=value")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        Trainer(ContrastiveObjective(), config, args.data_dir, args.exp_dir, device=args.device).run(args.max_steps)
    except (ConfigError, DataDirError, BackboneFileError, FloatingPointError) as e:
        logging.getLogger("train_contrastive").error("%s", e)
        print(f"train_contrastive: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
