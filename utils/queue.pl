#!/usr/bin/env perl
# Kaldi's queue.pl: runs "$cmd JOB=1:N <log> <command>" as a job array on
# Grid Engine (qsub), options mapped by conf/queue.conf.
#   e.g.: queue.pl --mem 4G JOB=1:4 exp/log/fbank.JOB.log echo JOB
# Options and behaviour: utils/grid_submit.pl.
use strict;
use warnings;
use FindBin;
exec($^X, "$FindBin::RealBin/grid_submit.pl", "sge", @ARGV) or die "queue.pl: cannot run grid_submit.pl: $!\n";
