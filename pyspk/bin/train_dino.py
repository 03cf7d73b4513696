"""Train a speaker-embedding backbone with DINO (self-distillation, no labels).

Usage: python -m pyspk.bin.train_dino --config conf/dino_demo.yaml [--device auto]
           [--max-steps N] <data-dir> <exp-dir> [section.key=value ...]

Reads features from <data-dir>/feats.scp (clean utterances; copies named
<utt>-reverb, <utt>-noise, ... or listed in utt2copies feed the crops).
Writes <exp-dir>/config.yaml, checkpoints/, log/train.log, metrics.tsv,
loss.png and final.pt (backbones "teacher" (default) and "student").
Re-running the same command resumes from the latest checkpoint; after a
finished run (<exp-dir>/.done) it does nothing. Under torchrun each process
trains on its shard of every epoch (DDP).

e.g.: python -m pyspk.bin.train_dino --config conf/dino_demo.yaml data/train exp/dino optim.lr.base=0.1
"""

from pyspk.ssl.dino import DINOObjective
from pyspk.train.cli import run_training_cli, training_parser


def get_parser():
    return training_parser(__doc__, "conf/dino_demo.yaml")


def main(argv=None):
    run_training_cli("train_dino", get_parser(), lambda args: DINOObjective(), argv)


if __name__ == "__main__":
    main()
