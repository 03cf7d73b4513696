#!/usr/bin/env perl
# Prints the lines of <in.scp> (or stdin) whose <N>th field (default: first) is
# the first field of some line of <id-list>, keeping their order, as Kaldi's
# utils/filter_scp.pl. With --exclude, prints the other lines.
use strict;
use warnings;

my $usage = "Usage: filter_scp.pl [--exclude] [-f <field>] <id-list> [<in.scp>] > <out.scp>\n"
  . "  --exclude   print the lines whose field is NOT in <id-list>\n"
  . "  -f N        filter on the N-th field, 1-based (default 1)\n"
  . "e.g.: utils/filter_scp.pl data/train/utt2spk data/all/feats.scp > data/train/feats.scp\n";

my ($exclude, $field) = (0, 1);
while (@ARGV && $ARGV[0] =~ m/^-/) {
  my $opt = shift @ARGV;
  if ($opt eq "--exclude") { $exclude = 1; }
  elsif ($opt eq "-f") {
    $field = shift @ARGV;
    defined $field && $field =~ m/^[1-9]\d*$/ or die "filter_scp.pl: -f needs a positive field number\n$usage";
  } else { die "filter_scp.pl: unknown option $opt\n$usage"; }
}
@ARGV == 1 || @ARGV == 2 or die $usage;

my $id_list = shift @ARGV;
open(my $ids, "<", $id_list) or die "filter_scp.pl: cannot open id list $id_list: $!\n";
my %wanted;
while (my $line = <$ids>) {
  my ($id) = split(' ', $line);
  defined $id or die "filter_scp.pl: $id_list:$.: empty line\n";
  $wanted{$id} = 1;
}
close($ids);

while (my $line = <>) {
  my @fields = split(' ', $line);
  @fields >= $field or die "filter_scp.pl: $ARGV:$.: fewer than $field fields: $line";
  print $line if ($exclude xor exists $wanted{$fields[$field - 1]});
}
