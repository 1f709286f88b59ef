#!/usr/bin/env bash
# Fans a scaling sweep out over SLURM: one job-array task per trial, each a
# launch/slurm.sbatch job running `python -m llmjax.sweep --trial_index I`.
#
#   launch/slurm_submit.sh [--dry_run] [--trials N] [--parallel K] [--nodes M]
#       SWEEP_CONFIG WORKDIR [llmjax.sweep flags...]
#   e.g. SBATCH_PARTITION=gpu launch/slurm_submit.sh --parallel 4 --nodes 1 \
#       experiments/scaling/cpu_small.py /shared/sweeps/s1
#
#   --trials N    the sweep's number of trials (default: python -m llmjax.sweep --count)
#   --parallel K  at most K trials at once (default: as many as the cluster allows)
#   --nodes M     nodes per trial (default: launch/slurm.sbatch's #SBATCH --nodes)
#   --dry_run     print the sbatch command instead of running it
# Other sbatch options come from its environment variables (SBATCH_PARTITION,
# SBATCH_TIMELIMIT, SBATCH_ACCOUNT, ...). A trial that already finished is
# skipped when its task runs again; rerun this script to redo failed ones.
set -euo pipefail

usage() {
  echo "usage: $0 [--dry_run] [--trials N] [--parallel K] [--nodes M]" \
    "SWEEP_CONFIG WORKDIR [flags...]" >&2
  exit 2
}

dry_run=0
trials=
parallel=
nodes=
while (($# > 0)); do
  case $1 in
    --dry_run) dry_run=1 ;;
    --trials) trials=${2:?--trials needs a number}; shift ;;
    --parallel) parallel=${2:?--parallel needs a number}; shift ;;
    --nodes) nodes=${2:?--nodes needs a number}; shift ;;
    *) break ;;
  esac
  shift
done
(($# >= 2)) || usage
config=$1
workdir=$2
shift 2

if [[ -z $trials ]]; then
  # The last line of --count is the number; flags like --config.x=y change nothing here.
  trials=$("${PYTHON:-python}" -m llmjax.sweep --config "$config" --count "$@" | tail -n 1)
fi
if ! [[ $trials =~ ^[1-9][0-9]*$ ]]; then
  echo "$0: the sweep $config has no trials (count: '$trials')" >&2
  exit 2
fi

cmd=(sbatch "--array=0-$((trials - 1))${parallel:+%$parallel}" --job-name=llmjax-sweep)
if [[ -n $nodes ]]; then
  cmd+=("--nodes=$nodes")
fi
cmd+=("$(dirname "$0")/slurm.sbatch" --sweep "$config" "$workdir" "$@")

if ((dry_run)); then
  printf '%q' "${cmd[0]}"
  printf ' %q' "${cmd[@]:1}"
  echo
  exit 0
fi
"${cmd[@]}"
