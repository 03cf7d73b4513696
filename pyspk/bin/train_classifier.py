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

from pyspk.config import ConfigError, load_config
from pyspk.supervised.classifier import ClassifierObjective
from pyspk.train.cli import run_training_cli, training_parser


def add_init_options(parser):
    parser.add_argument("--init-model", default=None,
                        help="backbone file to initialise the backbone from (default: random initialisation)")
    parser.add_argument("--init-backbone", default=None,
                        help="backbone of --init-model to use (default: the file's default backbone)")


def get_parser():
    return training_parser(__doc__, "conf/classifier_demo.yaml", add_init_options)


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
    run_training_cli("train_classifier", get_parser(), lambda args: ClassifierObjective(args.data_dir), argv,
                     build_config=build_config)


if __name__ == "__main__":
    main()
