#!/usr/bin/env perl
# Filter: utt2spk ("utt spk" lines) -> spk2utt ("spk utt1 utt2 ..."), as Kaldi's.
# Speakers come in order of first appearance, utterances in input order.
#   utils/utt2spk_to_spk2utt.pl [utt2spk] > spk2utt     (stdin when no file)
# e.g.: utils/utt2spk_to_spk2utt.pl data/train/utt2spk > data/train/spk2utt
use strict;
use warnings;

my (@speakers, %utts);
while (my $line = <>) {
  my @fields = split(' ', $line);
  @fields == 2 or die "utt2spk_to_spk2utt.pl: $ARGV:$.: expected 'utt spk', got: $line";
  my ($utt, $spk) = @fields;
  push @speakers, $spk unless exists $utts{$spk};
  push @{$utts{$spk}}, $utt;
}
print join(" ", $_, @{$utts{$_}}), "\n" for @speakers;
