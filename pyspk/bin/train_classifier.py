"""Train a speaker-embedding backbone as an AAM-softmax classifier of <data-dir>/utt2spk.

Usage: python -m pyspk.bin.train_classifier --config conf/classifier_demo.yaml [--device auto]
           [--init-model FILE [--init-backbone NAME]] [--max-steps N] <data-dir> <exp-dir> [section.key=value ...]

The speakers of utt2spk are the classes: true speakers, or the cluster ids of
a pseudo-labelled data dir. Features come from <data-dir>/feats.scp (clean
utterances; copies named <utt>-reverb, <utt>-noise, ... or listed in
utt2copies feed the crops, as for DINO). --init-model starts the backbone from
a backbone file (e.g. the DINO teacher, or the previous round's classifier);
it is stored in the config as classifier.init_model.

Writes <exp-dir>/config.yaml, checkpoints/, log/train.log, metrics.tsv,
loss.png and final.pt (backbone "model"). Re-running the same command resumes
from the latest checkpoint; after a finished run (<exp-dir>/.done) it does
nothing. Under torchrun each process trains on its shard of every epoch (DDP).

e.g.: python -m pyspk.bin.train_classifier --config conf/classifier_demo.yaml --init-model exp/dino/final.pt \\
          data/train_pl_r1 exp/classifier_r1 train.epochs=10
"""

import argparse
import logging
import sys

from pyspk.config import ConfigError, load_config
from pyspk.data.datadir import DataDirError
from pyspk.models import BackboneFileError
from pyspk.supervised.classifier import ClassifierObjective
from pyspk.train.loop import Trainer


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML training config (e.g. conf/classifier_demo.yaml)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    parser.add_argument("--init-model", default=None,
                        help="backbone file to initialise the backbone from (default: random initialisation)")
    parser.add_argument("--init-backbone", default=None,
                        help="backbone of --init-model to use (default: the file's default backbone)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="stop after this many steps in total, with a checkpoint (re-run to continue)")
    parser.add_argument("data_dir")
    parser.add_argument("exp_dir")
    parser.add_argument("overrides", nargs="*", help="config overrides, section.key=value")
    return parser


def build_config(args):
    """The config file with overrides, and --init-model/--init-backbone written into its classifier section."""
    config = load_config(args.config, args.overrides)
    if not isinstance(config.get("classifier"), dict):
        raise ConfigError(f"{args.config}: needs a 'classifier' section")
    if args.init_backbone and not args.init_model:
        raise ConfigError("--init-backbone needs --init-model")
    if args.init_model:
        config["classifier"]["init_model"] = args.init_model
        config["classifier"]["init_backbone"] = args.init_backbone
    return config


def main(argv=None):
    args = get_parser().parse_args(argv)
    try:
        config = build_config(args)
        Trainer(ClassifierObjective(args.data_dir), config, args.data_dir, args.exp_dir,
                device=args.device).run(args.max_steps)
    except (ConfigError, DataDirError, BackboneFileError, FloatingPointError) as e:
        logging.getLogger("train_classifier").error("%s", e)
        print(f"train_classifier: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
