#!/usr/bin/env python3
"""EER against the number of unlabelled training speakers, one line per method (the scaling study).

usage: python local/plot_scaling.py [options] <results> <png>
e.g.:  python local/plot_scaling.py --list hard exp_scaling/results.txt exp_scaling/scaling_hard.png

<results> holds result lines of steps/compute_metrics.sh, each prefixed ``train_speakers=<N>``
(local/scaling_study.sh collects them). The systems of one trial list (``--list``: the suffix
of ``trials_<list>``; empty for ``trials``) are plotted against N on a log scale, and the
relative gain of every system over the SSL model's (``--ssl-system``), 1 - EER / EER(SSL), is
printed as a table per size (and written to ``--gains``). The untrained network is left out.
"""

import argparse
import math
import sys
from collections import defaultdict

from pyspk.backend.plots import _pyplot, _save
from pyspk.backend.results import line_fields, read_results
from pyspk.fileutil import atomic_open


def read_scaling_results(path, list_name):
    """``{system: {speakers: EER %}}`` of the trial list ``list_name`` ('' for plain trials)."""
    suffix = f"_{list_name}" if list_name else ""
    eers = defaultdict(dict)
    for number, line in enumerate(read_results(path), 1):
        fields = line_fields(line)
        if not {"train_speakers", "system", "EER"} <= set(fields):
            raise ValueError(f"{path}:{number}: expected 'train_speakers=N system=... EER=...%', got {line!r}")
        system = fields["system"]
        listed = system.endswith("_hard")  # the one other list of this recipe
        if (suffix and not system.endswith(suffix)) or (not suffix and listed) or system.startswith("untrained_"):
            continue
        eers[system[:len(system) - len(suffix)]][int(fields["train_speakers"])] = float(fields["EER"].rstrip("%"))
    return eers


def gains_table(eers, ssl_system):
    """Lines of a table: per size, each system's EER and its relative gain over ``ssl_system``."""
    if ssl_system not in eers:
        raise ValueError(f"no {ssl_system} lines to measure the gains against (systems: {', '.join(sorted(eers))})")
    systems = sorted(eers)
    sizes = sorted({n for by_size in eers.values() for n in by_size})
    lines = ["| training speakers | system | EER | gain over " + ssl_system + " |", "| --- | --- | --- | --- |"]
    for n in sizes:
        reference = eers[ssl_system].get(n)
        for system in systems:
            if n not in eers[system]:
                continue
            gain = "" if reference is None or system == ssl_system else f"{1 - eers[system][n] / reference:+.1%}"
            lines.append(f"| {n} | {system} | {eers[system][n]:.2f}% | {gain} |")
    return lines


def plot_scaling(eers, path, title):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    for system in sorted(eers):
        sizes = sorted(eers[system])
        ax.plot(sizes, [eers[system][n] for n in sizes], marker="o", label=system)
    sizes = sorted({n for by_size in eers.values() for n in by_size})
    ax.set_xscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(n) for n in sizes])
    ax.minorticks_off()
    ax.set_xlabel("unlabelled training speakers")
    ax.set_ylabel("EER (%)")
    ax.set_ylim(bottom=0, top=math.ceil(1.1 * max(v for by_size in eers.values() for v in by_size.values())))
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", default="", help="trial list: the suffix of trials_<list>; empty for trials")
    parser.add_argument("--ssl-system", default="dino_cosine", help="the gains' reference (%(default)s)")
    parser.add_argument("--gains", help="also write the gains table to this file")
    parser.add_argument("results")
    parser.add_argument("png")
    args = parser.parse_args(argv)
    try:
        eers = read_scaling_results(args.results, args.list)
        if not eers:
            raise ValueError(f"{args.results}: no result lines of trial list '{args.list or 'trials'}'")
        table = gains_table(eers, args.ssl_system)
    except (OSError, ValueError) as err:
        print(f"{sys.argv[0]}: {err}", file=sys.stderr)
        sys.exit(1)
    plot_scaling(eers, args.png, f"speechocean762, trials{'_' + args.list if args.list else ''}")
    print("\n".join(table))
    if args.gains:
        with atomic_open(args.gains, "w") as f:
            f.write("\n".join(table) + "\n")


if __name__ == "__main__":
    main()
