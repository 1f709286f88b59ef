#!/usr/bin/env bash
# Cloud TPU VM slices with gcloud: create (queued resource), set up, run on every
# worker, follow the log, delete; and sweeps, one slice per trial or all trials
# one after another on one slice. On the workers jax.distributed reads the
# slice's topology itself (llmjax/distributed.py), so every worker runs the same
# command.
#
#   launch/tpu_vm.sh [--dry_run] create NAME           queue a slice and wait until it is ACTIVE
#   launch/tpu_vm.sh [--dry_run] setup NAME            copy this repository (HEAD), pip install it
#                                                      with jax[tpu] at this machine's jax version
#   launch/tpu_vm.sh [--dry_run] run NAME CONFIG WORKDIR [llmjax.main flags...]
#   launch/tpu_vm.sh [--dry_run] sweep NAME SWEEP_CONFIG WORKDIR [llmjax.sweep flags...]
#                                                      every trial, one after another
#   launch/tpu_vm.sh [--dry_run] fan_out PREFIX N SWEEP_CONFIG WORKDIR [flags...]
#                                                      N slices PREFIX-0..N-1 share the trials:
#                                                      slice i runs trials i, i+N, i+2N, ...
#   launch/tpu_vm.sh [--dry_run] cleanup PREFIX N      delete the N slices fan_out made
#   launch/tpu_vm.sh [--dry_run] logs NAME             follow worker 0's log
#   launch/tpu_vm.sh [--dry_run] delete NAME
#
# Environment: TPU_ZONE (required), TPU_PROJECT (default: gcloud's), TPU_TYPE
# (default v5litepod-16), TPU_RUNTIME (default v2-alpha-tpuv5-lite), TPU_SPOT=1
# for spot capacity, JAX_VERSION (default: the jax of this machine's python3, the
# version the project was tested with here) pins jax[tpu] in setup, TPU_TRIALS (default:
# python -m llmjax.sweep --count) is the sweep's trial count for fan_out, which refuses
# more slices than trials. Runs are detached (nohup) and log to ~/llmjax.log on each
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

# The jax version setup installs: JAX_VERSION, else this machine's (checked once).
jax_version() {
  local version=${JAX_VERSION:-}
  if [[ -z $version ]]; then
    version=$(${PYTHON:-python3} -c 'import jax; print(jax.__version__)' 2>/dev/null) || true
  fi
  if ! [[ $version =~ ^[0-9]+(\.[0-9]+)*$ ]]; then
    echo "$0: cannot tell which jax to install (got '$version'); set JAX_VERSION, e.g. 0.10.2" >&2
    exit 2
  fi
  echo "$version"
}

setup() {
  local archive=${TMPDIR:-/tmp}/llmjax-$1.tar.gz
  if [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    echo "$0: warning: uncommitted changes are not copied (setup ships HEAD)" >&2
  fi
  do_ git archive --format=tar.gz -o "$archive" HEAD
  do_ gcloud compute tpus tpu-vm scp "$archive" "$1:llmjax.tar.gz" "${where[@]}" --worker=all
  do_ gcloud compute tpus tpu-vm ssh "$1" "${where[@]}" --worker=all "--command=rm -rf llmjax \
&& mkdir llmjax && tar -xzf llmjax.tar.gz -C llmjax \
&& python3 -m pip install -q 'jax[tpu]==$jax' && python3 -m pip install -q -e llmjax"
}

# The sweep's number of trials: TPU_TRIALS, else llmjax.sweep --count on this machine.
count_trials() {
  local count=${TPU_TRIALS:-}
  if [[ -z $count ]]; then
    count=$(${PYTHON:-python3} -m llmjax.sweep --config "$1" --count "${@:2}" | tail -n 1) || true
  fi
  if ! [[ $count =~ ^[1-9][0-9]*$ ]]; then
    echo "$0: the sweep $1 has no trials (count: '$count')" >&2
    exit 2
  fi
  echo "$count"
}

# Slice $1 runs, one after another, the trials whose indices are in $2 (space-separated)
# of sweep $3 in workdir $4, with llmjax.sweep flags ${@:5}.
start_trials() {
  local slice=$1 indices=$2 one
  one=$(quoted python3 -m llmjax.sweep --config "$3" --workdir "$4" "${@:5}")
  do_ gcloud compute tpus tpu-vm ssh "$slice" "${where[@]}" --worker=all \
    "--command=cd llmjax && nohup sh -c $(quoted "for i in $indices; do $one --trial_index=\$i; done") </dev/null >~/llmjax.log 2>&1 &"
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
  cleanup)
    (($# == 1)) || usage ;;
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
  setup)
    jax=$(jax_version)
    setup "$name" ;;
  run) start "$name" llmjax.main --config "$1" --workdir "$2" "${@:3}" ;;
  sweep) start "$name" llmjax.sweep --config "$1" --workdir "$2" "${@:3}" ;;
  fan_out)
    slices=$1
    config=$2
    workdir=$3
    shift 3
    if ! [[ $slices =~ ^[1-9][0-9]*$ ]]; then
      echo "$0: fan_out N must be a positive integer, got '$slices'" >&2
      exit 2
    fi
    trials=$(count_trials "$config" "$@")
    if ((slices > trials)); then
      echo "$0: $slices slices for $trials trials: $((slices - trials)) would idle; use N <= $trials" >&2
      exit 2
    fi
    jax=$(jax_version)
    echo "# $trials trials on $slices slices; delete them afterwards: $0 cleanup $name $slices"
    for ((i = 0; i < slices; i++)); do
      request "$name-$i"
    done
    for ((i = 0; i < slices; i++)); do
      wait_active "$name-$i"
      setup "$name-$i"
      start_trials "$name-$i" "$(seq -s ' ' "$i" "$slices" "$((trials - 1))")" "$config" "$workdir" "$@"
    done ;;
  cleanup)
    slices=$1
    if ! [[ $slices =~ ^[1-9][0-9]*$ ]]; then
      echo "$0: cleanup N must be a positive integer, got '$slices'" >&2
      exit 2
    fi
    for ((i = 0; i < slices; i++)); do
      do_ gcloud compute tpus queued-resources delete "$name-$i" "${where[@]}" --force --quiet
    done ;;
  logs)
    do_ gcloud compute tpus tpu-vm ssh "$name" "${where[@]}" --worker=0 \
      '--command=tail -n 100 -f ~/llmjax.log' ;;
  delete)
    do_ gcloud compute tpus queued-resources delete "$name" "${where[@]}" --force --quiet ;;
esac
