#!/usr/bin/env bash
# One training run as N processes on this machine, the way a multi-host run works:
# a coordinator on a free localhost port, each process with its own fake CPU
# devices and its own log. Waits for all; if one fails, the others are stopped
# (SIGTERM, then SIGKILL after a grace period) instead of hanging in a collective.
# Stopping this script (SIGTERM, SIGINT/Ctrl-C, SIGHUP) stops every process the same
# way (a second signal kills them at once); it never exits leaving one running.
# The test harness for everything multi-host.
#
#   launch/local.sh [--dry_run] N CONFIG [python -m llmjax.main flags...]
#   e.g. launch/local.sh 2 experiments/base.py:tiny --workdir=runs/local2
#
# Environment:
#   LLMJAX_DEVICES_PER_PROCESS  fake CPU devices of each process (default 2)
#   LLMJAX_LOG_DIR              folder of process_I.log (default WORKDIR/logs/local-DATE-TIME,
#                               or logs/local-DATE-TIME without --workdir)
#   LLMJAX_PORT                 coordinator port (default: a free one)
#   LLMJAX_STOP_GRACE_S         seconds the others get after SIGTERM (default 10)
#   PYTHON                      the interpreter (default python)
# Exit status: 0 when every process succeeded, else that of the first to fail
# (2: bad arguments, 130: interrupted).
set -euo pipefail

usage() {
  echo "usage: $0 [--dry_run] N CONFIG [llmjax.main flags...]" >&2
  exit 2
}

dry_run=0
if [[ ${1:-} == --dry_run ]]; then
  dry_run=1
  shift
fi
(($# >= 2)) || usage
num_processes=$1
config=$2
shift 2
if ! [[ $num_processes =~ ^[1-9][0-9]*$ ]]; then
  echo "$0: N must be a positive integer, got '$num_processes'" >&2
  exit 2
fi

python=${PYTHON:-python}
devices=${LLMJAX_DEVICES_PER_PROCESS:-2}
# The run's --workdir (as llmjax.main reads it: --workdir=DIR or --workdir DIR).
workdir=
previous=
for arg in "$@"; do
  case $previous in --workdir | -workdir) workdir=$arg ;; esac
  case $arg in --workdir=* | -workdir=*) workdir=${arg#*=} ;; esac
  previous=$arg
done
stamp=local-$(date +%Y%m%d-%H%M%S)
if [[ -n $workdir ]]; then
  log_dir=${LLMJAX_LOG_DIR:-$workdir/logs/$stamp}
else
  log_dir=${LLMJAX_LOG_DIR:-logs/$stamp}
fi
grace=${LLMJAX_STOP_GRACE_S:-10}
free_port='import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'
port=${LLMJAX_PORT:-$("$python" -c "$free_port")}

# Sets cmd to the command of process $1, followed by the remaining arguments.
command_of() {
  local index=$1
  shift
  cmd=(env JAX_PLATFORMS=cpu "JAX_NUM_CPU_DEVICES=$devices" "$python" -m llmjax.main
    --config "$config" "--coordinator_address=localhost:$port"
    "--num_processes=$num_processes" "--process_id=$index" "$@")
}

if ((dry_run)); then
  echo "mkdir -p $(printf '%q' "$log_dir")"
  for ((i = 0; i < num_processes; i++)); do
    command_of "$i" "$@"
    printf '%q ' "${cmd[@]}"
    printf '>%q 2>&1 &\n' "$log_dir/process_$i.log"
  done
  exit 0
fi

mkdir -p "$log_dir"
declare -A running=()  # pid -> process index
status=0
deadline=  # once the others are told to stop: when they get SIGKILL
stop_all() {
  if ((${#running[@]} > 0)); then
    kill -TERM "${!running[@]}" 2>/dev/null || true
  fi
  deadline=$((SECONDS + grace))
}
# shellcheck disable=SC2329  # invoked by the trap
interrupted() {
  if ((status == 130)); then  # a second signal: no more grace
    echo "llmjax local: interrupted again; killing all processes" >&2
    deadline=$SECONDS
    return
  fi
  echo "llmjax local: interrupted; stopping all processes" >&2
  status=130
  stop_all
}
# Whatever ends this script, no process it started outlives it.
# shellcheck disable=SC2329  # invoked by the trap
kill_survivors() {
  if ((${#running[@]} > 0)); then
    kill -KILL "${!running[@]}" 2>/dev/null || true
  fi
  if [[ -n ${sleeper:-} ]]; then
    kill "$sleeper" 2>/dev/null || true
  fi
}
trap interrupted INT TERM HUP
trap kill_survivors EXIT

for ((i = 0; i < num_processes && status == 0; i++)); do
  command_of "$i" "$@"
  "${cmd[@]}" >"$log_dir/process_$i.log" 2>&1 &
  running[$!]=$i
  echo "llmjax local: process $i: pid $! log $log_dir/process_$i.log"
done

# Polls rather than `wait -n`: it also works on old bash. The pause is a background
# sleep that the `wait` builtin waits for: a trapped signal ends that wait at once and
# runs the trap (POSIX), whereas a foreground sleep leaves SIGINT to bash's heuristics
# for a child that may have handled it, and a Ctrl-C could go unanswered.
sleeper=
while ((${#running[@]} > 0)); do
  for pid in "${!running[@]}"; do
    kill -0 "$pid" 2>/dev/null && continue
    rc=0
    wait "$pid" || rc=$?
    index=${running[$pid]}
    unset "running[$pid]"
    if ((rc != 0 && status == 0)); then
      status=$rc
      log=$log_dir/process_$index.log
      echo "llmjax local: process $index (pid $pid) failed with exit status $rc;" \
        "stopping the others. Last lines of $log:" >&2
      tail -n 15 "$log" >&2
      stop_all
    fi
  done
  if [[ -n $deadline ]] && ((SECONDS >= deadline && ${#running[@]} > 0)); then
    # A survivor stuck in a collective with a dead peer cannot act on SIGTERM.
    echo "llmjax local: processes ${running[*]} still running after ${grace} s; killing them" >&2
    kill -KILL "${!running[@]}" 2>/dev/null || true
    deadline=
  fi
  sleep 0.2 &
  sleeper=$!
  wait "$sleeper" || true  # > 128 when a trap interrupted it
done
if ((status == 0)); then
  echo "llmjax local: all $num_processes processes finished; logs in $log_dir"
fi
exit "$status"
