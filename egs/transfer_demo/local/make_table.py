#!/usr/bin/env python3
"""Markdown table of accuracy and UAR from results.txt files.

Usage: local/make_table.py <name>=<results.txt> ... > exp/results.md
e.g.: local/make_table.py "frozen + LR=exp/linear_probe/results.txt" "staged=exp/finetune_staged/results.txt"
"""

import sys

from pyspk.transfer.labels import read_results


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or any("=" not in a for a in argv):
        print(__doc__, file=sys.stderr)
        sys.exit(1)
    print("| system | accuracy (%) | UAR (%) |\n|---|---:|---:|")
    for item in argv:
        name, path = item.split("=", 1)
        results = read_results(path)
        print(f"| {name} | {100 * results['accuracy']:.1f} | {100 * results['uar']:.1f} |")


if __name__ == "__main__":
    main()
