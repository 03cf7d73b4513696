#!/usr/bin/env perl
# The grid launchers utils/slurm.pl and utils/queue.pl (Sun/Son of Grid
# Engine), Kaldi-compatible drop-ins for run.pl; they run this as
#   grid_submit.pl slurm|sge [options] [JOB=1:N] <log-file> <command...>
# Submits the command as a job array (sbatch / qsub -t), prints the job id
# and how to cancel it, waits for every job and exits non-zero if any failed,
# naming a failing log. Each log starts with the command and ends with
# "# Ended (code N) at <date>, elapsed time S seconds", as run.pl's.
# Options:
#   --config <file>        # Kaldi-format config (default: conf/slurm.conf or
#                          # conf/queue.conf if it exists, else the built-in one below)
#   --mem <size>           # e.g. 4G per job
#   --gpu <n>              # GPUs per job
#   --num-threads <n>      # CPUs per job
#   --max-jobs-run <n>     # at most n array jobs at once
#   --time <limit>         # e.g. 4:00:00 (Slurm)
# Any other "--name value" option must be declared in the config ("option
# name=* ..."); unknown options fail. The job runs in the current directory and
# sources ./path.sh when there is one, as Kaldi's do.
use strict;
use warnings;
use Cwd qw(getcwd);
use File::Basename qw(dirname basename);

# What differs between the grids. The configs are Kaldi's formats and defaults.
my %grids = (
  slurm => {
    launcher => "slurm.pl", conf => "conf/slurm.conf", cancel => "scancel",
    config => <<'EOF',
command sbatch --export=PATH --ntasks-per-node=1
option time=* --time $0
option mem=* --mem $0
option mem=0
option num_threads=* --cpus-per-task $0
option num_threads=1 --cpus-per-task 1
option max_jobs_run=*
default gpu=0
option gpu=0
option gpu=* --gres=gpu:$0
EOF
  },
  sge => {
    launcher => "queue.pl", conf => "conf/queue.conf", cancel => "qdel",
    config => <<'EOF',
command qsub -v PATH -cwd -S /bin/bash -j y -l arch=*64*
option mem=* -l mem_free=$0,ram_free=$0
option mem=0
option num_threads=* -pe smp $0
option num_threads=1
option max_jobs_run=* -tc $0
default gpu=0
option gpu=0
option gpu=* -l gpu=$0 -q g.q
EOF
  },
);
my $grid_name = shift @ARGV // "";
die "grid_submit.pl: the first argument must be one of: " . join(" ", sort keys %grids) . "\n"
  unless exists $grids{$grid_name};
my $grid = $grids{$grid_name};
my $me = $grid->{launcher};
my $default_config = $grid->{config};

sub usage {
  print STDERR "Usage: $me [--config $grid->{conf}] [--mem 4G] [--gpu 1] [--num-threads N]\n",
               "                [--max-jobs-run N] [JOB=1:N] <log-file> <command...>\n",
               "e.g.: $me --mem 4G JOB=1:4 exp/log/fbank.JOB.log echo JOB\n";
  exit 1;
}

sub shell_quote {
  my ($x) = @_;
  $x =~ s/'/'\\''/g;
  return "'$x'";
}

my $config = -f $grid->{conf} ? $grid->{conf} : "";
my %cli_opts;  # option name => value, from the command line
my ($jobname, $jobstart, $jobend, $array) = ("", 1, 1, 0);
while (@ARGV > 0) {
  my $arg = $ARGV[0];
  if ($arg eq "--config" && @ARGV >= 2) {
    $config = $ARGV[1]; splice(@ARGV, 0, 2);
  } elsif ($arg =~ m/^--([a-z][\w-]*)$/ && @ARGV >= 2) {
    my $name = $1; $name =~ s/-/_/g;
    $cli_opts{$name} = $ARGV[1]; splice(@ARGV, 0, 2);
  } elsif ($arg =~ m/^([A-Za-z_]\w*)=(\d+):(\d+)$/) {
    ($jobname, $jobstart, $jobend, $array) = ($1, $2, $3, 1); shift @ARGV;
    die "$me: invalid job range $arg (start > end)\n" if $jobstart > $jobend;
  } elsif ($arg =~ m/^([A-Za-z_]\w*)=(\d+)$/) {
    ($jobname, $jobstart, $jobend, $array) = ($1, $2, $2, 1); shift @ARGV;
  } elsif ($arg =~ m/^-/) {
    die "$me: unknown option $arg\n";
  } else {
    last;
  }
}
usage() if @ARGV < 2;
my $logfile = shift @ARGV;
if ($array && $logfile !~ m/$jobname/ && $jobend > $jobstart) {
  die "$me: you are running an array job but the log file '$logfile' does not contain '$jobname'\n";
}

# Reads the config: the submit command, then the submit arguments of each option.
my ($submit, %any_value, %fixed_value, %defaults);
{
  my $text = $default_config;
  if ($config ne "") {
    open(my $fh, "<", $config) or die "$me: cannot read config $config: $!\n";
    local $/; $text = <$fh>; close($fh);
  }
  my $n = 0;
  for my $line (split /\n/, $text) {
    $n++;
    $line =~ s/#.*//; $line =~ s/^\s+|\s+$//g;
    next if $line eq "";
    my $where = $config ne "" ? "$config:$n" : "built-in config line $n";
    if ($line =~ m/^command\s+(.+)$/) {
      $submit = $1;
    } elsif ($line =~ m/^option\s+(\w+)=\*\s*(.*)$/) {
      $any_value{$1} = $2;
    } elsif ($line =~ m/^option\s+(\w+)=(\S+)\s*(.*)$/) {
      $fixed_value{"$1=$2"} = $3;
    } elsif ($line =~ m/^default\s+(\w+)=(\S+)$/) {
      $defaults{$1} = $2;
    } else {
      die "$me: cannot parse $where: '$line'\n";
    }
  }
  die "$me: no 'command' line in " . ($config || "the config") . "\n" unless defined $submit;
}
my %opts = (%defaults, %cli_opts);
my @submit_args;
for my $name (sort keys %opts) {
  my $value = $opts{$name};
  next if $name eq "max_jobs_run" && $grid_name eq "slurm";  # becomes the array's %N below
  if (exists $fixed_value{"$name=$value"}) {
    push @submit_args, $fixed_value{"$name=$value"};
  } elsif (exists $any_value{$name}) {
    (my $args = $any_value{$name}) =~ s/\$0/$value/g;
    push @submit_args, $args;
  } else {
    die "$me: option --" . ($name =~ s/_/-/gr) . " is not declared in " . ($config || "the built-in config") . "\n";
  }
}
my $max_jobs_run = $opts{max_jobs_run};
die "$me: --max-jobs-run must be a positive integer\n"
  if defined $max_jobs_run && $max_jobs_run !~ m/^[1-9]\d*$/;

# The command as bash words; the job index replaces JOB, inside quotes too.
my $operator = qr/^(\||\|\||&&|;|&|\(|\)|\d*>&\d+|(\d*|&)(>>?|<)[\w@%+=:,.\/-]*)$/;
my @words;
for my $word (@ARGV) {
  my $plain = $word =~ m/$operator/ || $word =~ m/^[\w@%+=:,.\/-]+$/;
  my $quoted = $plain ? $word : shell_quote($word);
  if ($array) {
    my $index = $plain ? '${JOB_INDEX}' : q{'"${JOB_INDEX}"'};
    $quoted =~ s/$jobname/$index/g;
  }
  push @words, $quoted;
}
my $cmd = join(" ", @words);
(my $logtemplate = $logfile) =~ s/$jobname/\${JOB_INDEX}/g if $array;
$logtemplate = $logfile unless $array;

# The grid's own output, the batch script and the done markers go to <logdir>/q.
my $logdir = dirname($logfile);
my $qdir = "$logdir/q";
system("mkdir", "-p", $qdir) == 0 or die "$me: cannot create $qdir\n";
my $base = basename($logfile); $base =~ s/\.log$//; $base =~ s/$jobname/JOB/g if $array;
my $tag = "$base.$$";
my $script = "$qdir/$tag.sh";
my $offset = $jobstart - 1;
my $cwd = getcwd();
my $qcwd = shell_quote($cwd);
my $qcmd_line = shell_quote("# " . join(" ", @ARGV));
open(my $sfh, ">", $script) or die "$me: cannot write $script: $!\n";
print $sfh <<EOF;
#!/usr/bin/env bash
cd $qcwd || exit 1
[ -f ./path.sh ] && . ./path.sh
JOB_INDEX=\$(( \${SLURM_ARRAY_TASK_ID:-\${SGE_TASK_ID:-1}} + $offset ))
log="$logtemplate"
mkdir -p "\$(dirname "\$log")"
{ echo $qcmd_line | sed "s/$jobname/\$JOB_INDEX/g"; echo "# Started at \$(date) on \$(hostname)"; } > "\$log"
start=\$(date +%s)
( set -o pipefail; $cmd ) >>"\$log" 2>&1
code=\$?
elapsed=\$(( \$(date +%s) - start ))
echo "# Accounting: time=\$elapsed threads=\${SLURM_CPUS_PER_TASK:-\${NSLOTS:-1}}" >> "\$log"
echo "# Ended (code \$code) at \$(date), elapsed time \$elapsed seconds" >> "\$log"
echo \$code > "$qdir/$tag.done.\$JOB_INDEX"
exit \$code
EOF
close($sfh);

# Submits; the array runs indices 1..N (JOB_INDEX adds the offset of JOB=a:b).
my $num_jobs = $jobend - $jobstart + 1;
my @done = map { "$qdir/$tag.done." . ($_ + $offset) } 1 .. $num_jobs;
unlink @done;
my @array_args = $grid_name eq "slurm"
  ? ("--array=1-$num_jobs" . (defined $max_jobs_run ? "%$max_jobs_run" : ""), "--parsable",
     "--job-name=" . shell_quote($base), "-o", shell_quote("$qdir/$tag.%a.out"))
  : ("-t", "1:$num_jobs", "-terse", "-N", shell_quote($base =~ s/^(\d)/j$1/r), "-o", shell_quote("$qdir/$tag.\$TASK_ID.out"));
my $submit_line = join(" ", $submit, @submit_args, @array_args, shell_quote($script));
my $jobid = `$submit_line 2>&1`;
if ($? != 0 || $jobid !~ m/^(\d+)/m) {
  die "$me: submitting failed ($submit_line):\n$jobid";
}
$jobid = $1;
print STDERR "$me: submitted job $jobid ($num_jobs job(s), logs $logfile); cancel with: $grid->{cancel} $jobid\n";

# Waits for every job's done marker. A job that left the queue without one
# (cancelled, node failure, time limit) counts as failed once it has been gone
# for a few polls (a shared file system may show the marker late).
my %gone_polls;
my @failed;
my $sleep = 0.5;
while (1) {
  my @pending = grep { !-f $done[$_ - 1] } 1 .. $num_jobs;
  last unless @pending;
  my (%queued, $all_queued);
  if ($grid_name eq "slurm") {
    %queued = map { m/_(\d+)$/ ? ($1 => 1) : () } split /\s+/, `squeue -h -r -j $jobid -o %i 2>/dev/null`;
    # A pending array range shows as 123_[2-4]: everything not started yet is queued.
    $all_queued = `squeue -h -j $jobid -o %i 2>/dev/null` =~ m/\[/;
  } else {
    # qstat -j answers for the whole array: queued while any of its tasks is.
    $all_queued = system("qstat -j $jobid >/dev/null 2>&1") == 0;
  }
  for my $task (@pending) {
    if ($queued{$task} || $all_queued) { delete $gone_polls{$task}; next; }
    if (++$gone_polls{$task} >= 5) {
      my $index = $task + $offset;
      my $logf = $logfile;
      $logf =~ s/$jobname/$index/g if $array;
      print STDERR "$me: job ${jobid}_$task left the queue without finishing; see $logf and $qdir/$tag.$task.out\n";
      if (open(my $fh, ">", $done[$task - 1])) { print $fh "1\n"; close($fh); }
      push @failed, $index;
    }
  }
  select(undef, undef, undef, $sleep);
  $sleep = 5 if ($sleep *= 1.5) > 5;
}
for my $task (1 .. $num_jobs) {
  open(my $fh, "<", $done[$task - 1]) or next;
  my $code = <$fh>;
  push @failed, $task + $offset if defined $code && $code =~ m/^(\d+)/ && $1 != 0;
}
my %seen;
@failed = sort { $a <=> $b } grep { !$seen{$_}++ } @failed;
unlink @done;
if (@failed) {
  my $logf = $logfile;
  $logf =~ s/$jobname/$failed[0]/g if $array;
  if ($num_jobs == 1) {
    print STDERR "$me: job failed, log is in $logf\n";
  } else {
    print STDERR "$me: " . scalar(@failed) . " / $num_jobs failed, log is in $logf\n";
  }
  exit 1;
}
exit 0;
