#!/usr/bin/env perl
# Kaldi's slurm.pl: runs "$cmd JOB=1:N <log> <command>" as a job array on
# Slurm (sbatch), options mapped by conf/slurm.conf.
#   e.g.: slurm.pl --mem 4G JOB=1:4 exp/log/fbank.JOB.log echo JOB
# Options and behaviour: utils/grid_submit.pl.
use strict;
use warnings;
use FindBin;
exec($^X, "$FindBin::RealBin/grid_submit.pl", "slurm", @ARGV) or die "slurm.pl: cannot run grid_submit.pl: $!\n";
