# shellcheck shell=bash
# Job launchers of this recipe; the only file a site edits. run.pl runs the
# jobs on this machine ("run.pl --gpu 1": each job on a GPU of its own);
# feature and augmentation jobs are light, training wants GPUs.
# On a Slurm cluster (options mapped to sbatch by conf/slurm.conf, or by the
# same defaults built into the launcher):
#   export train_cmd="slurm.pl --mem 8G"
#   export cpu_cmd="slurm.pl --mem 4G"
#   export cuda_cmd="slurm.pl --mem 16G --gpu 1 --num-threads 4"
# On Grid Engine, the same with queue.pl (conf/queue.conf), e.g.:
#   export train_cmd="queue.pl --mem 8G"
#   export cpu_cmd="queue.pl --mem 4G"
#   export cuda_cmd="queue.pl --mem 16G --gpu 1"
export train_cmd="run.pl"
export cpu_cmd="run.pl"
export cuda_cmd="run.pl --gpu 1"
