"""Command line: convert between Hugging Face folders and llmjax run folders.

  python -m llmjax.convert hf-to-llmjax --hf_dir PATH --out WORKDIR [--dtype bfloat16]
writes a run folder to start training from (--config.init_from=WORKDIR) or to
sample from; training can also start from the HF folder itself
(--config.init_from=hf:PATH).
  python -m llmjax.convert llmjax-to-hf --workdir RUN [--step N] --out HF_DIR [--overwrite]
writes a folder that transformers' AutoModelForCausalLM.from_pretrained loads
(AutoModelForMaskedLM for an encoder), with the run's tokenizer (AutoTokenizer loads it)
and --family gpt2|llama|mistral|qwen2|bert.
  python -m llmjax.convert check --hf_dir PATH [--workdir RUN]
prints the max |diff| of each layer's output and of the logits between transformers and
llmjax on a few prompts; exits 1 when one is past --tolerance.
Bad input exits with status 2 and a message.
"""

import argparse
import pathlib
import sys

import safetensors

from llmjax.convert import check as checker
from llmjax.convert import hf_config, run_folder
from llmjax.model.config import DTYPES


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m llmjax.convert')
  sub = parser.add_subparsers(dest='command', required=True)
  to_llmjax = sub.add_parser('hf-to-llmjax', help='a Hugging Face folder -> an llmjax run folder')
  to_llmjax.add_argument('--hf_dir', required=True, help='config.json, *.safetensors, tokenizer')
  to_llmjax.add_argument('--out', required=True, help='the new run folder (absent or empty)')
  to_llmjax.add_argument('--dtype', default='float32', choices=DTYPES, help='parameter dtype')
  to_hf = sub.add_parser('llmjax-to-hf', help='an llmjax run folder -> a Hugging Face folder')
  to_hf.add_argument('--workdir', required=True, help='the run folder')
  to_hf.add_argument('--step', type=int, default=None, help='checkpoint step; default: newest')
  to_hf.add_argument('--out', required=True, help='the Hugging Face folder to write')
  to_hf.add_argument('--overwrite', action='store_true', help='replace files in a non-empty --out')
  to_hf.add_argument('--dtype', default='float32', choices=DTYPES, help='dtype of the tensors')
  to_hf.add_argument('--family', choices=hf_config.SUPPORTED, default=None,
                     help='model_type to write; default: the imported one, else gpt2 for '
                          'learned positions, qwen2 for q/k/v biases, llama otherwise')
  check = sub.add_parser('check', help='max |diff| per layer: transformers vs llmjax')
  check.add_argument('--hf_dir', required=True, help='the Hugging Face folder (the reference)')
  check.add_argument('--workdir', default=None,
                     help='a run folder to compare (default: llmjax\'s import of --hf_dir)')
  check.add_argument('--step', type=int, default=None, help='checkpoint step; default: newest')
  check.add_argument('--num_prompts', type=int, default=3, help='random prompts')
  check.add_argument('--length', type=int, default=32, help='tokens per prompt')
  check.add_argument('--tolerance', type=float, default=checker.TOLERANCE)
  return parser


def main(argv=None) -> int:
  parser = _parser()
  args = parser.parse_args(argv)
  try:
    if args.command == 'check':
      report = checker.compare(args.hf_dir, args.workdir, args.step, args.num_prompts,
                               args.length)
      print('\n'.join(report.lines(args.tolerance)))
      return 1 if report.first_mismatch(args.tolerance) else 0
    if args.command == 'hf-to-llmjax':
      step = run_folder.hf_to_run(args.hf_dir, args.out, args.dtype)
      print(f'wrote {step}; start a run from it with --config.init_from={args.out}')
    else:
      out = run_folder.run_to_hf(args.workdir, args.out, args.step, args.overwrite, args.dtype,
                                 args.family)
      print(f'wrote {out}')
  except (ValueError, FileNotFoundError, FileExistsError) as e:  # bad input, named by the error
    print(f'llmjax.convert: {e}', file=sys.stderr)
    return 2
  except safetensors.SafetensorError as e:  # a damaged or not-safetensors weights file
    files = sorted(p.name for p in pathlib.Path(args.hf_dir).glob('*.safetensors'))
    print(f'llmjax.convert: {args.hf_dir}: cannot read {", ".join(files)}: not a valid '
          f'safetensors file ({e})', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
