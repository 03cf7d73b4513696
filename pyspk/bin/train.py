"""Train a speaker-embedding network: the method is the config's ``objective``.

Usage: python -m pyspk.bin.train --config <train.yaml> [--device auto] [--init-model FILE [--init-backbone NAME]]
           [--max-steps N] <data-dir> <exp-dir> [section.key=value ...]

Objectives (pyspk.train.objectives): dino, contrastive and memo (self-supervised,
feats.scp only), classifier (AAM-softmax on the speakers of utt2spk: true
speakers or the cluster ids of pseudo-labels) and finetune (staged fine-tuning
into an utterance classifier of utt2label). Features come from
<data-dir>/feats.scp (clean utterances; copies named <utt>-reverb, <utt>-noise,
... or listed in utt2copies feed the crops), or with data.source=wav from the
audio of <data-dir>/wav.scp, augmented and turned into fbank on the device
(data.online_aug, data.fbank_conf; pyspk/train/wav_data.py, online_aug.py).

--init-model starts the network from a backbone file (<section>.init_model:
dino, classifier, finetune), e.g. the DINO teacher or the previous round.

Writes <exp-dir>/config.yaml, checkpoints/, log/train.log, metrics.tsv,
loss.png and final.pt (a backbone file for pyspk.bin.extract_embeddings).
Re-running the same command resumes from the latest checkpoint; after a
finished run (<exp-dir>/.done) it does nothing. Under torchrun each process
trains on its shard of every epoch (DDP).

e.g.: python -m pyspk.bin.train --config conf/dino_demo.yaml data/train exp/dino optim.lr.base=0.1
      python -m pyspk.bin.train --config conf/classifier_demo.yaml --init-model exp/dino/final.pt \\
          data/train_pl_r1 exp/classifier_r1
"""

from pyspk.cli import add_device_option, new_parser, user_errors_exit
from pyspk.config import ConfigError, load_config
from pyspk.data.datadir import DataDirError
from pyspk.fileutil import DirLockedError, no_space_message
from pyspk.models import BackboneFileError
from pyspk.train.checkpoint import CheckpointError
from pyspk.train.objectives import set_init_model, train

# Errors a user can fix: bad config, data dir or backbone file, a diverged loss, unreadable
# checkpoints, an experiment dir in use, a full disk.
USER_ERRORS = (ConfigError, DataDirError, BackboneFileError, FloatingPointError, CheckpointError, DirLockedError,
               OSError)


def get_parser():
    parser = new_parser(__doc__)
    parser.add_argument("--config", required=True, help="YAML training config (e.g. conf/dino_demo.yaml)")
    add_device_option(parser)
    parser.add_argument("--init-model", default=None,
                        help="backbone file to start from (default: the config's, else random initialisation)")
    parser.add_argument("--init-backbone", default=None,
                        help="backbone of --init-model to use (default: the file's default backbone)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="stop after this many steps in total, with a checkpoint (re-run to continue)")
    parser.add_argument("data_dir")
    parser.add_argument("exp_dir")
    parser.add_argument("overrides", nargs="*", help="config overrides, section.key=value")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)

    def describe(error):
        return no_space_message(error, args.exp_dir) if isinstance(error, OSError) else str(error)

    with user_errors_exit("train", USER_ERRORS, describe):
        config = load_config(args.config, args.overrides)
        set_init_model(config, args.config, args.init_model, args.init_backbone)
        train(config, args.config, args.data_dir, args.exp_dir, device=args.device, max_steps=args.max_steps)


if __name__ == "__main__":
    main()
