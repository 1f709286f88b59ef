"""Writes (or applies) a JobSet manifest that trains llmjax on a GKE GPU or TPU node pool.

  python launch/k8s/make_jobset.py --name run1 --image IMAGE --accelerator tpu \
      --tpu_topology 4x4 --config experiments/preset.py:llama3.2-1b -- --config.mesh.fsdp=16
  ... --apply            pipe it into `kubectl apply -f -`
  ... --apply --dry_run  print that command instead

GPU pods find process 0 by the DNS name JobSet gives each pod
(NAME-workers-0-0.NAME) and take their process id from the pod's completion
index; TPU pods need neither, as JAX reads the slice from GKE's environment.
The image holds this repository installed (`pip install -e .` and jax[cuda12] or
jax[tpu]); the PersistentVolumeClaim (ReadWriteMany, e.g. Filestore) holds the
workdir, mounted at /data in every pod.
"""

import argparse
import json
import math
import pathlib
import re
import string
import subprocess
import sys

TEMPLATE = pathlib.Path(__file__).with_name('jobset.yaml')


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--name', required=True, type=_dns_label,
                      help='JobSet name: a DNS-1123 label (lowercase letters, digits, -)')
  parser.add_argument('--image', required=True, help='container image with llmjax installed')
  parser.add_argument('--accelerator', choices=('gpu', 'tpu'), required=True)
  parser.add_argument('--config', required=True, help='experiment file, inside the image')
  parser.add_argument('--workdir', help='run folder; default /data/runs/NAME')
  parser.add_argument('--pvc', default='llmjax-data', help='claim holding the workdir')
  parser.add_argument('--hosts', type=int, default=2, help='GPU: nodes (one process each)')
  parser.add_argument('--gpus_per_host', type=int, default=8)
  parser.add_argument('--gpu_type', default='nvidia-h100-80gb', help='GKE accelerator label')
  parser.add_argument('--tpu_type', default='tpu-v5-lite-podslice', help='GKE TPU label')
  parser.add_argument('--tpu_topology', default='4x4', help='chips per side, e.g. 2x4, 4x4')
  parser.add_argument('--chips_per_host', type=int, default=4, help='TPU chips of one VM')
  parser.add_argument('--port', type=int, default=8476, help='coordinator port (GPU)')
  parser.add_argument('--max_restarts', type=int, default=3)
  parser.add_argument('--apply', action='store_true', help='kubectl apply the manifest')
  parser.add_argument('--dry_run', action='store_true', help='print the kubectl command')
  parser.add_argument('flags', nargs='*', help='after --: python -m llmjax.main flags')
  args = parser.parse_args(argv)
  for key, value in vars(args).items():  # a newline would inject YAML into the manifest
    for text in value if isinstance(value, list) else [value]:
      if isinstance(text, str) and any(ord(c) < 32 or ord(c) == 127 for c in text):
        parser.error(f'--{key} {text!r} holds a control character (a newline?)')
  return args


# Pods are named NAME-workers-I-J: the name must leave room in a 63-character label.
_DNS_LABEL = re.compile(r'[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?')


def _dns_label(name: str) -> str:
  if not _DNS_LABEL.fullmatch(name):
    raise argparse.ArgumentTypeError(
        f'{name!r} is not a DNS-1123 label of at most 40 characters (lowercase letters, '
        'digits and -, starting and ending with a letter or digit)')
  return name


def _indent(lines: list[str], spaces: int) -> str:
  return '\n'.join(' ' * spaces + line for line in lines)


def manifest(args: argparse.Namespace) -> str:
  """The filled-in template; errors name a bad topology."""
  workdir = args.workdir or f'/data/runs/{args.name}'
  flags = [f'--config={args.config}', f'--workdir={workdir}']
  if args.accelerator == 'gpu':
    hosts = args.hosts
    selector = {'cloud.google.com/gke-accelerator': args.gpu_type}
    limits = {'nvidia.com/gpu': args.gpus_per_host}
    flags += [f'--coordinator_address={args.name}-workers-0-0.{args.name}:{args.port}',
              f'--num_processes={hosts}', '--process_id=$(JOB_COMPLETION_INDEX)']
  else:
    try:
      chips = math.prod(int(side) for side in args.tpu_topology.split('x'))
    except ValueError:
      raise SystemExit(f'--tpu_topology={args.tpu_topology!r}: expected sides like 4x4') from None
    if chips % args.chips_per_host:
      raise SystemExit(f'--tpu_topology={args.tpu_topology} has {chips} chips, not a multiple '
                       f'of --chips_per_host={args.chips_per_host}')
    hosts = chips // args.chips_per_host
    selector = {'cloud.google.com/gke-tpu-accelerator': args.tpu_type,
                'cloud.google.com/gke-tpu-topology': args.tpu_topology}
    limits = {'google.com/tpu': args.chips_per_host}
  return string.Template(TEMPLATE.read_text()).substitute(
      name=args.name, image=args.image, hosts=hosts, max_restarts=args.max_restarts,
      port=args.port, pvc=args.pvc,
      node_selector=_indent([f'{k}: {v}' for k, v in selector.items()], 14),
      limits=_indent([f'{k}: {v}' for k, v in limits.items()], 18),
      args=_indent([f'- {json.dumps(f)}' for f in flags + args.flags], 14))


def main(argv: list[str]) -> int:
  args = parse_args(argv)
  text = manifest(args)
  if not args.apply:
    print(text, end='')
    return 0
  if args.dry_run:
    print(f"kubectl apply -f - <<'EOF'\n{text}EOF")
    return 0
  return subprocess.run(['kubectl', 'apply', '-f', '-'], input=text, text=True).returncode


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
