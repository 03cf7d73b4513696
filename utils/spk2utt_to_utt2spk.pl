#!/usr/bin/env perl
# Filter: spk2utt ("spk utt1 utt2 ...") -> utt2spk ("utt spk"), as Kaldi's.
# Lines come in input order (sort with LC_ALL=C sort if needed).
#   utils/spk2utt_to_utt2spk.pl [spk2utt] > utt2spk     (stdin when no file)
# e.g.: utils/spk2utt_to_utt2spk.pl data/train/spk2utt > data/train/utt2spk
use strict;
use warnings;

while (my $line = <>) {
  my ($spk, @utts) = split(' ', $line);
  defined $spk && @utts or die "spk2utt_to_utt2spk.pl: $ARGV:$.: expected 'spk utt1 utt2 ...', got: $line";
  print "$_ $spk\n" for @utts;
}
