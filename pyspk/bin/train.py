"""Train a speaker-embedding network: the method is the config's ``objective``.

Usage: python -m pyspk.bin.train --config <train.yaml> [--device auto] [--init-model FILE [--init-backbone NAME]]
           [--max-steps N] <data-dir> <exp-dir> [section.key=value ...]
       python -m pyspk.bin.train --check-only --config <train.yaml> [--init-model FILE | --init-config <ssl.yaml>
           [--init-overrides "k=v ..."]] [<data-dir> <exp-dir>] [section.key=value ...]

Objectives (pyspk.train.objectives): dino, contrastive and memo (self-supervised,
feats.scp only), classifier (AAM-softmax on the speakers of utt2spk: true
speakers or the cluster ids of pseudo-labels) and finetune (staged fine-tuning
into an utterance classifier of utt2label). Features come from
<data-dir>/feats.scp (clean utterances; copies named <utt>-reverb, <utt>-noise,
... or listed in utt2copies feed the crops), or with data.source=wav from the
audio of <data-dir>/wav.scp, augmented and turned into fbank on the device
(data.online_aug, data.fbank_conf; pyspk/train/wav_data.py, online_aug.py).

--init-model starts the network from a backbone file (<section>.init_model:
dino, classifier, finetune), e.g. the DINO teacher or the previous round. The
backbone's architecture then comes from that file: the config's model section
may be left out (or be "model: from_init"); keys it does give must equal the
file's (a conflict is an error naming both values).

Overrides may set any key the objective knows (pyspk/train/schema.py), in the
YAML or not; a mistyped key is refused with its close matches, and a value of
the wrong type, nested ones included, is refused naming the key and where it
came from (the file or the command line), before any work.

--check-only loads and checks the config (with its overrides and init model)
and exits: 0 when training could start, 1 with the reason otherwise. With
--init-config the backbone it starts from is the default backbone that config
(with --init-overrides) trains, checked too: the pipeline checks the
classifier against the SSL config before the SSL model exists. Given
<data-dir> <exp-dir>, it also says whether <exp-dir> is finished (a finished
training of another config is an error naming what differs).

Writes <exp-dir>/config.yaml, checkpoints/, log/train.log, metrics.tsv,
loss.png and final.pt (a backbone file for pyspk.bin.extract_embeddings).
Re-running the same command resumes from the latest checkpoint; after a
finished run (<exp-dir>/.done) of the same config it does nothing; of another
config (changed --config or overrides) it stops, naming what differs
(steps/train.sh --retrain true trains it again). Under torchrun each process
trains on its shard of every epoch (DDP).

e.g.: python -m pyspk.bin.train --config conf/dino_demo.yaml data/train exp/dino optim.lr.base=0.1
      python -m pyspk.bin.train --config conf/classifier_demo.yaml --init-model exp/dino/final.pt \\
          data/train_pl_r1 exp/classifier_r1
      python -m pyspk.bin.train --check-only --config conf/classifier_demo.yaml --init-config conf/dino_demo.yaml
"""

from pyspk.cli import add_device_option, new_parser, user_errors_exit
from pyspk.config import ConfigError
from pyspk.data.datadir import DataDirError
from pyspk.fileutil import DirLockedError, no_space_message
from pyspk.models import BackboneFileError
from pyspk.train.checkpoint import CheckpointError
from pyspk.train.experiment import check_finished_experiment
from pyspk.train.objectives import (
    check_training_config,
    default_backbone_configs,
    init_backbone_of,
    load_training_config,
    resolve_init_backbone,
    set_init_model,
    train,
)

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
                        help="backbone of --init-model (or --init-config) to use (default: the default backbone)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="stop after this many steps in total, with a checkpoint (re-run to continue)")
    parser.add_argument("--check-only", action="store_true",
                        help="load and check the config (and --init-config), then exit without training")
    parser.add_argument("--init-config", default=None,
                        help="with --check-only: the training config whose default backbone this one starts from")
    parser.add_argument("--init-overrides", default="",
                        help="with --init-config: its overrides, space-separated as steps/train.sh's --overrides "
                             "(default: none)")
    parser.add_argument("args", nargs="*", metavar="<data-dir> <exp-dir> [section.key=value ...]",
                        help="the data dir and experiment dir (optional with --check-only), then config overrides")
    return parser


def split_args(parser, args, check_only):
    """``(data_dir, exp_dir, overrides)``: the leading arguments without '=' are the dirs."""
    dirs = []
    while len(dirs) < len(args) and "=" not in args[len(dirs)]:
        dirs.append(args[len(dirs)])
    if len(dirs) not in ((0, 2) if check_only else (2,)):
        parser.error("expected <data-dir> <exp-dir> [section.key=value ...]"
                     + (" (both or neither with --check-only)" if check_only else ""))
    return (*(dirs or [None, None]), args[len(dirs):])


def prepared_config(args, overrides):
    """The config as it will train: overrides, --init-model and the backbone it starts from applied, checked."""
    config = load_training_config(args.config, overrides)
    set_init_model(config, args.config, args.init_model, None if args.init_config else args.init_backbone)
    if args.init_config:
        # Split on spaces as steps/train.sh splits --overrides (a JSON value keeps its quotes).
        init = load_training_config(args.init_config, args.init_overrides.split())
        resolve_init_backbone(init, args.init_config, None)
        check_training_config(init, args.init_config)
        backbones = default_backbone_configs(init)
        name = args.init_backbone or next(iter(backbones))
        if name not in backbones:
            raise ConfigError(f"--init-backbone {name}: {args.init_config} trains no such backbone; it trains "
                              f"{', '.join(backbones)}")
        backbone = (f"the {name} backbone {args.init_config} trains", backbones[name])
    else:
        backbone = init_backbone_of(config, args.config)
    if config.get("objective") != "finetune":
        resolve_init_backbone(config, args.config, backbone)
    check_training_config(config, args.config)
    return config


def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    data_dir, exp_dir, overrides = split_args(parser, args.args, args.check_only)

    def describe(error):
        return no_space_message(error, exp_dir) if isinstance(error, OSError) else str(error)

    with user_errors_exit("train", USER_ERRORS, describe):
        if (args.init_config or args.init_overrides) and not args.check_only:
            raise ConfigError("--init-config and --init-overrides go with --check-only (training takes --init-model)")
        if args.init_config and args.init_model:
            raise ConfigError("give --init-model or --init-config, not both")
        config = prepared_config(args, overrides)
        if args.check_only:
            if exp_dir is not None and check_finished_experiment(config, exp_dir):
                print(f"train: {exp_dir}/.done exists: training already finished with this config; nothing to do")
            else:
                print(f"train: {args.config}{' and ' + args.init_config if args.init_config else ''}: "
                      "config checked")
            return
        train(config, args.config, data_dir, exp_dir, device=args.device, max_steps=args.max_steps)


if __name__ == "__main__":
    main()
