# Job launchers of this recipe; the only file a site edits. On a grid, point
# them at queue.pl/slurm.pl with their options, e.g. "slurm.pl --mem 8G";
# embedding extraction is light, fine-tuning wants a GPU.
export train_cmd="run.pl"
export cpu_cmd="run.pl"
export cuda_cmd="run.pl --gpu 1"
