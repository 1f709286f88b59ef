#!/usr/bin/env bash
# Cloud TPU VM slices with gcloud: create (queued resource), set up, run on every
# worker, follow the log, delete; and sweeps, one slice per trial or all trials
# one after another on one slice. On the workers jax.distributed reads the
# slice's topology itself (llmjax/distributed.py), so every worker runs the same
# command.
#
#   launch/tpu_vm.sh [--dry_run] create NAME           queue a slice and wait until it is ACTIVE
#   launch/tpu_vm.sh [--dry_run] setup NAME            copy this repository (HEAD), pip install it
#   launch/tpu_vm.sh [--dry_run] run NAME CONFIG WORKDIR [llmjax.main flags...]
#   launch/tpu_vm.sh [--dry_run] sweep NAME SWEEP_CONFIG WORKDIR [llmjax.sweep flags...]
#                                                      every trial, one after another
#   launch/tpu_vm.sh [--dry_run] fan_out PREFIX N SWEEP_CONFIG WORKDIR [flags...]
#                                                      N slices PREFIX-0.. each running one trial
#   launch/tpu_vm.sh [--dry_run] logs NAME             follow worker 0's log
#   launch/tpu_vm.sh [--dry_run] delete NAME
#
# Environment: TPU_ZONE (required), TPU_PROJECT (default: gcloud's), TPU_TYPE
# (default v5litepod-16), TPU_RUNTIME (default v2-alpha-tpuv5-lite), TPU_SPOT=1
# for spot capacity. Runs are detached (nohup) and log to ~/llmjax.log on each
# worker. WORKDIR must be one folder all workers share (e.g. a Filestore NFS
# mount, or a bucket mounted with gcsfuse at the same path on every worker):
# all workers write each checkpoint together. Rerunning `run` resumes.
set -euo pipefail

usage() {
  sed -n '/^#   launch/,/^#$/p' "$0" | sed 's/^# *//' >&2
  exit 2
}

dry_run=0
if [[ ${1:-} == --dry_run ]]; then
  dry_run=1
  shift
fi
(($# >= 2)) || usage
action=$1
name=$2
shift 2

zone=${TPU_ZONE:?set TPU_ZONE, e.g. TPU_ZONE=us-west4-a}
type=${TPU_TYPE:-v5litepod-16}
runtime=${TPU_RUNTIME:-v2-alpha-tpuv5-lite}
where=("--zone=$zone")
if [[ -n ${TPU_PROJECT:-} ]]; then
  where+=("--project=$TPU_PROJECT")
fi

# Runs (or with --dry_run prints) one command.
do_() {
  if ((dry_run)); then
    quoted "$@"
    echo
  else
    "$@"
  fi
}

# The words, quoted for a shell, separated by spaces.
quoted() {
  printf '%q' "$1"
  if (($# > 1)); then
    printf ' %q' "${@:2}"
  fi
}

# Queues slice $1.
request() {
  local spot=()
  if [[ ${TPU_SPOT:-0} == 1 ]]; then
    spot=(--spot)
  fi
  do_ gcloud compute tpus queued-resources create "$1" "--node-id=$1" "${where[@]}" \
    "--accelerator-type=$type" "--runtime-version=$runtime" "${spot[@]}"
}

# Waits until slice $1 is ACTIVE.
wait_active() {
  local describe=(gcloud compute tpus queued-resources describe "$1" "${where[@]}"
    '--format=value(state.state)')
  if ((dry_run)); then
    echo "# then every 30 s, until it prints ACTIVE:"
    do_ "${describe[@]}"
    return
  fi
  local state=
  until [[ $state == ACTIVE ]]; do
    sleep 30
    state=$("${describe[@]}")
    echo "llmjax tpu: $1 is $state"
    if [[ $state == FAILED || $state == SUSPENDED ]]; then
      exit 1
    fi
  done
}

setup() {
  local archive=${TMPDIR:-/tmp}/llmjax-$1.tar.gz
  do_ git archive --format=tar.gz -o "$archive" HEAD
  do_ gcloud compute tpus tpu-vm scp "$archive" "$1:llmjax.tar.gz" "${where[@]}" --worker=all
  do_ gcloud compute tpus tpu-vm ssh "$1" "${where[@]}" --worker=all "--command=rm -rf llmjax \
&& mkdir llmjax && tar -xzf llmjax.tar.gz -C llmjax \
&& python3 -m pip install -q -U 'jax[tpu]' && python3 -m pip install -q -e llmjax"
}

# Starts `python -m MODULE ARGS...` on every worker of slice $1, detached.
start() {
  local slice=$1
  shift
  do_ gcloud compute tpus tpu-vm ssh "$slice" "${where[@]}" --worker=all \
    "--command=cd llmjax && nohup python3 -m $(quoted "$@") </dev/null >~/llmjax.log 2>&1 &"
}

case $action in
  create | setup | delete | logs)
    (($# == 0)) || usage ;;
  run | sweep)
    (($# >= 2)) || usage ;;
  fan_out)
    (($# >= 3)) || usage ;;
  *) usage ;;
esac

case $action in
  create)
    request "$name"
    wait_active "$name" ;;
  setup) setup "$name" ;;
  run) start "$name" llmjax.main --config "$1" --workdir "$2" "${@:3}" ;;
  sweep) start "$name" llmjax.sweep --config "$1" --workdir "$2" "${@:3}" ;;
  fan_out)
    trials=$1
    config=$2
    workdir=$3
    shift 3
    for ((i = 0; i < trials; i++)); do
      request "$name-$i"
    done
    for ((i = 0; i < trials; i++)); do
      wait_active "$name-$i"
      setup "$name-$i"
      start "$name-$i" llmjax.sweep --config "$config" --workdir "$workdir" "--trial_index=$i" "$@"
    done ;;
  logs)
    do_ gcloud compute tpus tpu-vm ssh "$name" "${where[@]}" --worker=0 \
      '--command=tail -n 100 -f ~/llmjax.log' ;;
  delete)
    do_ gcloud compute tpus queued-resources delete "$name" "${where[@]}" --force --quiet ;;
esac
