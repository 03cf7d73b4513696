# Job launchers; the only file a site edits. On a grid, point these at
# queue.pl/slurm.pl with their options, e.g. "slurm.pl --mem 4G".
export train_cmd="run.pl"
export cpu_cmd="run.pl"
export cuda_cmd="run.pl --gpu 1"
