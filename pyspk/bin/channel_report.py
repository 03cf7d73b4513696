"""How much of what separates a set of embeddings is the channel: the share of their variance between the
sessions (calls) and phone types of a data dir, and between its speakers (run by steps/sv_pipeline.sh's summary).

Usage:
  python -m pyspk.bin.channel_report [options] <xvector-dir> <data-dir>
e.g.:
  python -m pyspk.bin.channel_report --clusters exp/pl_dino_r1/cluster/cluster_assignments.txt \\
      exp/dino/xvectors_train data/train

Reads the embeddings of <xvector-dir>/xvector.scp and the factors <data-dir>/utt2<factor> of --factors
that exist (utt2spk: speaker). On the embeddings centred and length-normalised, prints
"channel.<factor>_share" (between-group / total variance; 1 - within/total), "<factor>_share_chance"
(that of as many random groups), and, with --clusters (a cluster_assignments.txt, or any "<utt> <cluster>"
file), "clusters_share" and "<factor>_share_of_clusters" (the share of the between-cluster variance lying
between the factor's groups), as the cluster report's "channel" section; --report also writes them there.
"""

import logging
import sys

import numpy as np

from pyspk.backend.embeddings import EmbeddingDir
from pyspk.cli import new_parser, user_errors_exit
from pyspk.cluster import report
from pyspk.data.datadir import DataDirError, iter_lines
from pyspk.logutil import setup_logging


def get_parser():
    parser = new_parser(__doc__)
    parser.add_argument("--factors", default="session,phonetype,spk",
                        help="utt2<factor> files of <data-dir> to read, those present (default: %(default)s)")
    parser.add_argument("--clusters", default="", help="'<utt> <cluster> ...' lines (cluster_assignments.txt)")
    parser.add_argument("--report", default="", help="also write the lines to this file")
    parser.add_argument("xvector_dir")
    parser.add_argument("data_dir")
    return parser


def read_clusters(path, utts):
    table = {}
    for lineno, fields in iter_lines(path):
        if len(fields) < 2:
            raise DataDirError(path, lineno, "expected '<utt> <cluster> ...'")
        table[fields[0]] = fields[1]
    missing = [utt for utt in utts if utt not in table]
    if missing:
        raise DataDirError(path, 0, f"no cluster for {len(missing)} utterances, e.g. '{missing[0]}'")
    return [table[utt] for utt in utts]


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()
    with user_errors_exit("channel_report", (DataDirError, ValueError, OSError)):
        utts, x = EmbeddingDir(args.xvector_dir).xvectors()
        names = [name for name in args.factors.split(",") if name]
        factors = report.read_factors(args.data_dir, utts, names)
        if not factors:
            raise ValueError(f"{args.data_dir} has none of " + ", ".join(f"utt2{name}" for name in names))
        factors = {("speaker" if name == "spk" else name): labels for name, labels in factors.items()}
        clusters = read_clusters(args.clusters, utts) if args.clusters else None
        shares = report.channel_shares(np.asarray(x), clusters, factors)
        if args.report:
            report.write_report(args.report, {"channel": shares})
    sys.stdout.write("".join(f"channel.{key} {report.format_value(value)}\n" for key, value in shares.items()))
    logging.getLogger("channel_report").info("%s: %d embeddings, factors %s", args.xvector_dir, len(utts),
                                             ", ".join(factors))


if __name__ == "__main__":
    main()
