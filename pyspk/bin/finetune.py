"""Fine-tune a self-supervised backbone into an utterance classifier (utt2label), and evaluate it.

Usage:
  python -m pyspk.bin.finetune train --config <finetune.yaml> --init <backbone.pt> [--backbone NAME]
      [--label-file utt2label] [--random-init true|false] [--chunk-frames N] [--augment true|false]
      [--device auto] [--max-steps N] <train-dir> <exp-dir> [section.key=value ...]
      Staged training (finetune.stages in the config) on <train-dir>/feats.scp and utt2label;
      each stage in <exp-dir>/stage<i>_<name>/ (config.yaml, checkpoints/, log/train.log,
      metrics.tsv, loss.png); the classifier in <exp-dir>/final.pt. Re-running resumes;
      after <exp-dir>/.done it does nothing. --random-init trains the same architecture
      from scratch; --chunk-frames sets the training crop length; --augment false turns
      copies, SpecAugment and channel augmentation off.
  python -m pyspk.bin.finetune evaluate [--label-file utt2label] [--chunk-size N] [--min-chunk-size N]
      [--batch-size N] [--device auto] <classifier.pt> <test-dir> <out-dir>
      Writes <out-dir>/results.txt (accuracy, UAR, per-class recall) and <out-dir>/utt2pred;
      chunk options default to the training config's finetune.eval.
e.g.:
  python -m pyspk.bin.finetune train --config conf/finetune_staged.yaml --init exp/dino/final.pt \\
      data/train_family exp/finetune_staged
  python -m pyspk.bin.finetune evaluate exp/finetune_staged/final.pt data/test_family exp/finetune_staged
"""

import argparse
import logging
import sys

from pyspk.config import ConfigError, load_config
from pyspk.data.datadir import DataDirError
from pyspk.device import pick_device
from pyspk.logutil import setup_logging
from pyspk.models import BackboneFileError
from pyspk.transfer.finetune import evaluate, run_finetune, with_cli_options

log = logging.getLogger("finetune")


def str2bool(value):
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{value}'")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="staged fine-tuning into <exp-dir>/final.pt")
    train.add_argument("--config", required=True, help="YAML fine-tuning config (data, optim, train, finetune)")
    train.add_argument("--init", required=True, help="backbone file of the self-supervised model")
    train.add_argument("--backbone", default=None, help="backbone name in --init (default: its default)")
    train.add_argument("--label-file", default=None, help="label file in <train-dir> (default: config, utt2label)")
    train.add_argument("--random-init", type=str2bool, default=None,
                       help="train the --init architecture from random weights (default: config, false)")
    train.add_argument("--chunk-frames", type=int, default=None, help="training crop length in frames "
                       "(default: the config's data.crops)")
    train.add_argument("--augment", type=str2bool, default=None,
                       help="false: no augmented copies, SpecAugment or channel augmentation (default: config)")
    train.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    train.add_argument("--max-steps", type=int, default=None,
                       help="stop after this many steps over all stages, with a checkpoint (re-run to continue)")
    train.add_argument("data_dir")
    train.add_argument("exp_dir")
    train.add_argument("overrides", nargs="*", help="config overrides, section.key=value")

    ev = sub.add_parser("evaluate", help="accuracy and UAR of a classifier on a data dir")
    ev.add_argument("--label-file", default="utt2label", help="label file in <test-dir> (default utt2label)")
    ev.add_argument("--chunk-size", type=int, default=None, help="frames per chunk (default: training config)")
    ev.add_argument("--min-chunk-size", type=int, default=None, help="shortest chunk (default: training config)")
    ev.add_argument("--batch-size", type=int, default=None, help="chunks per forward pass (default: training config)")
    ev.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    ev.add_argument("model")
    ev.add_argument("data_dir")
    ev.add_argument("out_dir")
    return parser


def run_train(args):
    config = load_config(args.config, args.overrides)
    if args.backbone is not None:
        config.setdefault("finetune", {})["backbone"] = args.backbone
    if args.label_file is not None:
        config.setdefault("finetune", {})["label_file"] = args.label_file
    if args.random_init is not None:
        config.setdefault("finetune", {})["random_init"] = args.random_init
    if isinstance(config.get("data"), dict) and isinstance(config["data"].get("crops"), dict):
        config = with_cli_options(config, args.chunk_frames, args.augment)
    run_finetune(config, args.data_dir, args.exp_dir, args.init, device=args.device, max_steps=args.max_steps)


def run_evaluate(args):
    setup_logging()
    for name in ("chunk_size", "min_chunk_size", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")
    metrics, failed = evaluate(args.model, args.data_dir, args.out_dir, args.label_file, args.chunk_size,
                               args.min_chunk_size, args.batch_size, pick_device(args.device))
    print(f"Done {sum(n for _, n in metrics['recall'].values())}, failed {len(failed)}: "
          f"accuracy {metrics['accuracy']:.4f} UAR {metrics['uar']:.4f}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        run_train(args) if args.command == "train" else run_evaluate(args)
    except (ConfigError, DataDirError, BackboneFileError, FloatingPointError) as e:
        log.error("%s", e)
        print(f"finetune: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
