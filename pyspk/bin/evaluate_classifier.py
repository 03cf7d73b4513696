"""Evaluate a fine-tuned utterance classifier (pyspk.bin.train with objective finetune) on a data dir.

Usage: python -m pyspk.bin.evaluate_classifier [--label-file utt2label] [--chunk-size N] [--min-chunk-size N]
           [--batch-size N] [--device auto] <classifier.pt> <test-dir> <out-dir>

Embeds each utterance of <test-dir>/feats.scp in chunks as extraction does,
applies the classifier's head and writes <out-dir>/results.txt (accuracy,
unweighted average recall, per-class recall) and <out-dir>/utt2pred. Chunk
options default to the training config's finetune.eval. Unreadable
utterances are reported and counted ("Done N, failed M").

e.g.: python -m pyspk.bin.evaluate_classifier exp/finetune_staged/final.pt data/test_family exp/finetune_staged
"""

from pyspk.cli import add_device_option, new_parser, positive_int, user_errors_exit
from pyspk.config import ConfigError
from pyspk.data.datadir import DataDirError
from pyspk.device import pick_device
from pyspk.logutil import setup_logging
from pyspk.models import BackboneFileError
from pyspk.transfer.evaluate import evaluate


def get_parser():
    parser = new_parser(__doc__)
    parser.add_argument("--label-file", default="utt2label", help="label file in <test-dir> (default utt2label)")
    parser.add_argument("--chunk-size", type=positive_int, default=None,
                        help="frames per chunk (default: training config)")
    parser.add_argument("--min-chunk-size", type=positive_int, default=None,
                        help="shortest chunk (default: training config)")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="chunks per forward pass (default: training config)")
    add_device_option(parser)
    parser.add_argument("model")
    parser.add_argument("data_dir")
    parser.add_argument("out_dir")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()
    with user_errors_exit("evaluate_classifier", (ConfigError, DataDirError, BackboneFileError)):
        metrics, failed = evaluate(args.model, args.data_dir, args.out_dir, args.label_file, args.chunk_size,
                                   args.min_chunk_size, args.batch_size, pick_device(args.device))
    print(f"Done {sum(n for _, n in metrics['recall'].values())}, failed {len(failed)}: "
          f"accuracy {metrics['accuracy']:.4f} UAR {metrics['uar']:.4f}")


if __name__ == "__main__":
    main()
