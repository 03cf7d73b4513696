#!/usr/bin/env perl
# Kaldi-compatible local job launcher.
#   run.pl [options] [JOB=1:N] <log-file> <command...>
# With JOB=1:N, runs N copies of the command with "JOB" replaced by the job
# index in the log name and in the command, at most --max-jobs-run at a time
# (default, as Kaldi's: the number of CPUs; with --gpu N, see below). Each
# log starts with the command and ends with
# "# Ended (code N) at <date>, elapsed time S seconds". Exits non-zero if any
# job fails and names a failing log.
# As in Kaldi, an argument that is a shell operator reaches bash as it is:
# an escaped "\|", "\|\|", "\&\&", "'>'" or "2\>/dev/null" on the command line
# is a pipe, list or redirection in the job. Every other argument stays one
# literal argument (spaces, quotes, $, globs and parentheses included; Kaldi's
# run.pl would let bash interpret those in arguments without spaces). Other
# queue options ("--mem 4G", "-pe smp 4", "-V") are accepted and ignored.
use strict;
use warnings;

my $max_jobs_run = 0;
my ($jobname, $jobstart, $jobend) = ("", 1, 1);
my $array = 0;
my $using_gpu = 0;

sub usage {
  print STDERR "Usage: run.pl [--max-jobs-run N] [JOB=1:N] <log-file> <command...>\n",
               "e.g.: run.pl JOB=1:4 exp/log/fbank.JOB.log echo JOB\n";
  exit 1;
}

sub shell_quote {
  my ($x) = @_;
  $x =~ s/'/'\\''/g;
  return "'$x'";
}

while (@ARGV > 0) {
  my $arg = $ARGV[0];
  if ($arg eq "--max-jobs-run" || $arg eq "-tc") {
    shift @ARGV; $max_jobs_run = shift @ARGV;
    usage() unless defined $max_jobs_run && $max_jobs_run =~ m/^\d+$/ && $max_jobs_run > 0;
  } elsif ($arg eq "-V") {
    shift @ARGV;
  } elsif ($arg eq "-pe") {
    splice(@ARGV, 0, 3);
  } elsif ($arg eq "--gpu" && @ARGV >= 2) {
    die "run.pl: --gpu needs a number of GPUs, got '$ARGV[1]'\n" unless $ARGV[1] =~ m/^\d+$/;
    $using_gpu = $ARGV[1];
    splice(@ARGV, 0, 2);
  } elsif ($arg =~ m/^-/ && @ARGV >= 2) {
    splice(@ARGV, 0, 2);  # a grid option (--mem, --num-threads ...), meaningless locally
  } elsif ($arg =~ m/^([A-Za-z_]\w*)=(\d+):(\d+)$/) {
    ($jobname, $jobstart, $jobend) = ($1, $2, $3); $array = 1; shift @ARGV;
    die "run.pl: invalid job range $arg (start > end)\n" if $jobstart > $jobend;
  } elsif ($arg =~ m/^([A-Za-z_]\w*)=(\d+)$/) {
    ($jobname, $jobstart, $jobend) = ($1, $2, $2); $array = 1; shift @ARGV;
  } else {
    last;
  }
}
usage() if @ARGV < 2;
my $logfile = shift @ARGV;
if ($array && $logfile !~ m/$jobname/ && $jobend > $jobstart) {
  die "run.pl: you are running an array job but the log file '$logfile' does not contain '$jobname'\n";
}

my $operator = qr/^(\||\|\||&&|;|&|\(|\)|\d*>&\d+|(\d*|&)(>>?|<)[\w@%+=:,.\/-]*)$/;
my $cmd = join(" ", map { m/$operator/ || m/^[\w@%+=:,.\/-]+$/ ? $_ : shell_quote($_) } @ARGV);

# With --gpu N, the machine's GPUs (those in CUDA_VISIBLE_DEVICES when it is
# set, else all that nvidia-smi lists) are cut into groups of N; each running
# job gets a group of its own through CUDA_VISIBLE_DEVICES, so at most that
# many jobs run at once and each sees its devices as cuda:0..N-1.
my @gpu_groups;
if ($using_gpu) {
  my @gpus;
  if (defined $ENV{CUDA_VISIBLE_DEVICES} && $ENV{CUDA_VISIBLE_DEVICES} ne "") {
    @gpus = split /,/, $ENV{CUDA_VISIBLE_DEVICES};
  } else {
    @gpus = map { m/^GPU (\d+):/ ? $1 : () } `nvidia-smi -L 2>/dev/null`;
  }
  if (@gpus > 0 && @gpus < $using_gpu) {
    die "run.pl: --gpu $using_gpu asks for more GPUs than this machine has (" . scalar(@gpus) . ")\n";
  }
  push @gpu_groups, join(",", splice(@gpus, 0, $using_gpu)) while @gpus >= $using_gpu;
}
if ($using_gpu) {
  # One job per GPU group; one at a time when no GPU is visible (the job then fails or uses the CPU).
  my $groups = @gpu_groups > 0 ? scalar @gpu_groups : 1;
  $max_jobs_run = $groups if $max_jobs_run <= 0 || $max_jobs_run > $groups;
} elsif ($max_jobs_run <= 0) {
  # As Kaldi: one job per CPU, or all of them when there are only a few more jobs than CPUs.
  my $cpus = `nproc 2>/dev/null`;
  $max_jobs_run = ($cpus && $cpus =~ m/^(\d+)/ && $1 > 0) ? $1 : 1;
  my $num_jobs = $jobend - $jobstart + 1;
  $max_jobs_run = $num_jobs if $num_jobs > $max_jobs_run && $num_jobs < 1.4 * $max_jobs_run;
}
my %pid2job;
my %pid2group;
my @free_groups = @gpu_groups;
my @failed;
my $running = 0;

sub reap {
  my $pid = wait();
  return if $pid < 0;
  my $status = $?;
  my $job = $pid2job{$pid};
  push @free_groups, delete $pid2group{$pid} if exists $pid2group{$pid};
  $running--;
  push @failed, $job if $status != 0;
}

for (my $jobid = $jobstart; $jobid <= $jobend; $jobid++) {
  reap() while $running >= $max_jobs_run;
  my $gpu_group = shift @free_groups;
  my $logf = $logfile;
  my $jcmd = $cmd;
  if ($array) { $logf =~ s/$jobname/$jobid/g; $jcmd =~ s/$jobname/$jobid/g; }
  my $logdir = $logf; $logdir =~ s:/[^/]+$::;
  system("mkdir", "-p", $logdir) if $logdir ne $logf;
  my $pid = fork();
  die "run.pl: fork failed: $!\n" unless defined $pid;
  if ($pid == 0) {
    open(my $fh, ">", $logf) or die "run.pl: cannot write log $logf: $!\n";
    print $fh "# $jcmd\n# Started at " . `date`;
    if (defined $gpu_group) {
      $ENV{CUDA_VISIBLE_DEVICES} = $gpu_group;
      print $fh "# CUDA_VISIBLE_DEVICES=$gpu_group\n";
    }
    close($fh);
    my $start = time();
    my $qlog = shell_quote($logf);
    my $ret = system("bash", "-c", "set -o pipefail; ( $jcmd ) >>$qlog 2>&1");
    my $code = $ret == -1 ? 255 : ($ret & 127 ? 128 + ($ret & 127) : $ret >> 8);
    my $elapsed = time() - $start;
    open($fh, ">>", $logf) or die "run.pl: cannot write log $logf: $!\n";
    print $fh "# Accounting: time=$elapsed threads=1\n# Ended (code $code) at " . `date` =~ s/\n$//r . ", elapsed time $elapsed seconds\n";
    close($fh);
    exit($code == 0 ? 0 : 1);
  }
  $pid2job{$pid} = $jobid;
  $pid2group{$pid} = $gpu_group if defined $gpu_group;
  $running++;
}
reap() while $running > 0;

if (@failed) {
  my $n = scalar @failed;
  my $total = $jobend - $jobstart + 1;
  my @sorted = sort { $a <=> $b } @failed;
  my $logf = $logfile;
  $logf =~ s/$jobname/$sorted[0]/g if $array;
  if ($total == 1) {
    print STDERR "run.pl: job failed, log is in $logf\n";
  } else {
    print STDERR "run.pl: $n / $total failed, log is in $logf\n";
  }
  exit 1;
}
exit 0;
