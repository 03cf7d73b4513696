#!/usr/bin/env perl
# Kaldi-compatible local job launcher.
#   run.pl [--max-jobs-run N] [JOB=1:N] <log-file> <command...>
# With JOB=1:N, runs N copies of the command with "JOB" replaced by the job
# index in the log name and in the command, at most --max-jobs-run at a time
# (default: all). Each log starts with the command and ends with
# "# Ended (code N) at <date>, elapsed time S seconds". Exits non-zero if any
# job fails and names the failing log.
use strict;
use warnings;
use POSIX ":sys_wait_h";

my $max_jobs_run = -1;
my ($jobname, $jobstart, $jobend) = ("", 1, 1);
my $array = 0;

sub usage {
  print STDERR "Usage: run.pl [--max-jobs-run N] [JOB=1:N] <log-file> <command...>\n",
               "e.g.: run.pl JOB=1:4 exp/log/fbank.JOB.log echo JOB\n";
  exit 1;
}

while (@ARGV > 0) {
  if ($ARGV[0] eq "--max-jobs-run") {
    shift @ARGV; $max_jobs_run = shift @ARGV;
    usage() unless defined $max_jobs_run && $max_jobs_run =~ m/^\d+$/ && $max_jobs_run > 0;
  } elsif ($ARGV[0] =~ m/^--(mem|num-threads|gpu|config|time)$/) {
    shift @ARGV; shift @ARGV;  # accepted for queue.pl compatibility, ignored locally
  } elsif ($ARGV[0] =~ m/^([\w_][\w\d_]*)=(\d+):(\d+)$/) {
    ($jobname, $jobstart, $jobend) = ($1, $2, $3); $array = 1; shift @ARGV;
    die "run.pl: invalid job range $ARGV[0]\n" if $jobstart > $jobend;
  } elsif ($ARGV[0] =~ m/^([\w_][\w\d_]*)=(\d+)$/) {
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

# Quote arguments that contain shell metacharacters so the command survives bash -c.
my $cmd = "";
foreach my $x (@ARGV) {
  if ($x =~ m/^\S+$/ && $x !~ m/[;&|<>'"\$()`*?\[\]{}~#\\]/) { $cmd .= $x . " "; }
  elsif ($x =~ m/^[^']*$/) { $cmd .= "'$x' "; }
  else { $x =~ s/(["\$`\\])/\\$1/g; $cmd .= "\"$x\" "; }
}

$max_jobs_run = $jobend - $jobstart + 1 if $max_jobs_run <= 0;
my %pid2job;
my @failed;
my $running = 0;

sub reap {
  my $pid = wait();
  return if $pid < 0;
  my $status = $?;
  my $job = $pid2job{$pid};
  $running--;
  push @failed, $job if $status != 0;
}

for (my $jobid = $jobstart; $jobid <= $jobend; $jobid++) {
  reap() while $running >= $max_jobs_run;
  my $logf = $logfile;
  my $jcmd = $cmd;
  if ($array) { $logf =~ s/$jobname/$jobid/g; $jcmd =~ s/\b$jobname\b/$jobid/g; }
  my $logdir = $logf; $logdir =~ s:/[^/]+$::;
  system("mkdir", "-p", $logdir) if $logdir ne $logf;
  my $pid = fork();
  die "run.pl: fork failed: $!\n" unless defined $pid;
  if ($pid == 0) {
    open(my $fh, ">", $logf) or die "run.pl: cannot write log $logf: $!\n";
    print $fh "# $jcmd\n# Started at " . `date`;
    close($fh);
    my $start = time();
    my $ret = system("bash", "-c", "set -o pipefail; ( $jcmd ) >>'$logf' 2>&1");
    my $code = $ret == -1 ? 255 : ($ret & 127 ? 128 + ($ret & 127) : $ret >> 8);
    my $elapsed = time() - $start;
    open($fh, ">>", $logf);
    print $fh "# Accounting: time=$elapsed threads=1\n# Ended (code $code) at " . `date` =~ s/\n$//r . ", elapsed time $elapsed seconds\n";
    close($fh);
    exit($code == 0 ? 0 : 1);
  }
  $pid2job{$pid} = $jobid;
  $running++;
}
reap() while $running > 0;

if (@failed) {
  my $n = scalar @failed;
  my $total = $jobend - $jobstart + 1;
  my $logf = $logfile;
  $logf =~ s/$jobname/$failed[0]/g if $array;
  if ($total == 1) {
    print STDERR "run.pl: job failed, log is in $logf\n";
  } else {
    print STDERR "run.pl: $n / $total failed, log is in $logf\n";
  }
  exit 1;
}
exit 0;
