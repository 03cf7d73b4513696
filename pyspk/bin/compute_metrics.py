"""EER and minDCF of a score file, as Kaldi's compute-eer and sid/compute_min_dcf.py (run by
steps/compute_metrics.sh).

Usage:
  python -m pyspk.bin.compute_metrics [options] <trials> <scores>
e.g.:
  python -m pyspk.bin.compute_metrics --name plda_vox1 --results exp/results.txt \\
      --det-plot exp/scores/plda_vox1.det.png data/voxceleb1_test/trials exp/scores/plda_vox1

Prints "EER: ...%" and "minDCF(p-target=...): ..." lines; with --results puts
the line "system=<name> EER=...% minDCF(p=0.01)=... minDCF(p=0.05)=... trials=<trials> scores=<scores>"
into that file (with --calibrated true, scores that are log-likelihood ratios, also
"actDCF(p=...)=..." at the same priors after the minDCFs: the cost of deciding at the
Bayes threshold log((1 - p) / p)), replacing an earlier line of the same system made from the same
scores and trials. A line of that system made from other scores (another scores
file or trial list) is kept and the run fails, naming it, unless --overwrite true.
"""

import argparse
import logging
import sys

from pyspk.backend.plots import plot_det, plot_score_histogram
from pyspk.backend.results import ResultConflict, check_results, format_result, update_results
from pyspk.backend.scoring import match_scores_to_trials
from pyspk.cli import bool_arg
from pyspk.data.datadir import DataDirError, read_trials
from pyspk.logutil import setup_logging
from pyspk.metrics import act_dcf, bayes_threshold, eer_and_threshold, min_dcf_and_threshold


def p_targets_arg(text):
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None
    if not all(0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"p-targets must be in (0, 1), got '{text}'")
    return values


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="", help="system name in the results line (default: the scores path)")
    parser.add_argument("--results", default="", help="results file to update; empty: none")
    parser.add_argument("--p-targets", type=p_targets_arg, default=[0.01, 0.05],
                        help="minDCF target priors, c_miss = c_fa = 1 (default: 0.01,0.05)")
    parser.add_argument("--calibrated", type=bool_arg, default=False,
                        help="the scores are log-likelihood ratios: also actDCF at the same priors (default: false)")
    parser.add_argument("--det-plot", default="", help="write a DET curve PNG here")
    parser.add_argument("--hist-plot", default="", help="write a target/non-target score histogram PNG here")
    parser.add_argument("--skip-missing", type=bool_arg, default=False,
                        help="count trials without a score instead of failing (default: false)")
    parser.add_argument("--overwrite", type=bool_arg, default=False,
                        help="replace a results line of the same system made from other scores or trials "
                             "(default: false: fail, naming it)")
    parser.add_argument("trials")
    parser.add_argument("scores")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()
    log = logging.getLogger("compute_metrics")
    name = args.name or args.scores
    try:
        if args.results and not args.overwrite:  # fail before any work; checked again when writing
            check_results(args.results, name, format_result(name, 0.0, [], args.trials, args.scores))
        trials = read_trials(args.trials)
        scores, labels, num_skipped = match_scores_to_trials(trials, args.trials, args.scores, args.skip_missing)
        if not labels.any() or labels.all():
            raise ValueError(f"{args.trials}: the scored trials have no "
                             f"{'target' if not labels.any() else 'non-target'} trials")
        eer, eer_threshold = eer_and_threshold(scores, labels)
        min_dcfs = []
        for p_target in args.p_targets:
            min_dcf, threshold = min_dcf_and_threshold(scores, labels, p_target)
            log.info("minDCF is %.4f at threshold %.4f (p-target=%g, c-miss=1, c-fa=1)", min_dcf, threshold, p_target)
            min_dcfs.append((p_target, min_dcf))
        act_dcfs = []
        if args.calibrated:
            for p_target in args.p_targets:
                act_dcfs.append((p_target, act_dcf(scores, labels, p_target)))
                log.info("actDCF is %.4f at the Bayes threshold %.4f (p-target=%g)", act_dcfs[-1][1],
                         bayes_threshold(p_target), p_target)
        result = format_result(name, eer, min_dcfs, args.trials, args.scores, act_dcfs)
        if args.results:
            update_results(args.results, name, result, overwrite=args.overwrite)
        if args.det_plot:
            plot_det({name: (scores, labels)}, args.det_plot, {name: eer})
        if args.hist_plot:
            plot_score_histogram(scores, labels, args.hist_plot, title=name)
    except ResultConflict as e:
        sys.exit(f"compute_metrics: ERROR: {e}")
    except (DataDirError, ValueError, OSError) as e:
        sys.exit(f"compute_metrics: {e}")
    log.info("Equal error rate is %.4g%%, at threshold %g", 100 * eer, eer_threshold)
    print(f"EER: {100 * eer:.4g}%")
    for p_target, min_dcf in min_dcfs:
        print(f"minDCF(p-target={p_target:g}): {min_dcf:.4f}")
    for p_target, value in act_dcfs:
        print(f"actDCF(p-target={p_target:g}): {value:.4f}")
    print(result)
    log.info("Done %d trials (%d targets), skipped %d", labels.size, int(labels.sum()), num_skipped)


if __name__ == "__main__":
    main()
