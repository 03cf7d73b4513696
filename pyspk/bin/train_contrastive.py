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

from pyspk.ssl.contrastive import ContrastiveObjective
from pyspk.train.cli import run_training_cli, training_parser


def get_parser():
    return training_parser(__doc__, "conf/contrastive_demo.yaml")


def main(argv=None):
    run_training_cli("train_contrastive", get_parser(), lambda args: ContrastiveObjective(), argv)


if __name__ == "__main__":
    main()
