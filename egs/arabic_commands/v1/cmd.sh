# Job launchers of this recipe; the only file a site edits. On a grid, point
# them at queue.pl/slurm.pl with their options, e.g. "slurm.pl --mem 8G";
# feature and augmentation jobs are light, training wants GPUs.
export train_cmd="run.pl"
export cpu_cmd="run.pl"
export cuda_cmd="run.pl --gpu 1"
