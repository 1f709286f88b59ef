"""Fine-tunes end to end through the CLI: warm start from a run folder, exact resume of a
fine-tune (data order included), the end-of-run predictions. Slow: several training runs."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = str(ROOT / 'experiments/base.py:tiny')


def _main(cwd, *flags):
  proc = subprocess.run([sys.executable, '-m', 'llmjax.main', '--config', TINY, *flags],
                        capture_output=True, text=True, cwd=cwd, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def _records(workdir):
  return [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]


def _classify_flags(tmp_path, workdir, steps):
  rng = np.random.default_rng(0)
  for name, count in (('train', 96), ('eval', 24)):
    lines = []
    for _ in range(count):
      label = str(rng.choice(['yes', 'no']))
      lines.append(json.dumps({'text': ('a' if label == 'yes' else 'b') * 3, 'label': label}))
    (tmp_path / f'{name}.jsonl').write_text('\n'.join(lines) + '\n')
  return [f'--workdir={workdir}', '--config.finetune.task=classify',
          f'--config.finetune.train_data=jsonl:{tmp_path}/train.jsonl',
          f'--config.finetune.eval_data=jsonl:{tmp_path}/eval.jsonl',
          "--config.finetune.labels=('yes','no')", '--config.data.packing=first_fit',
          f'--config.init_from={tmp_path}/base', '--config.optim.schedule=constant',
          '--config.optim.warmup_steps=0', f'--config.train.steps={steps}',
          '--config.train.log_every=1', '--config.train.eval_every=4',
          '--config.checkpoint.every_steps=4']


@pytest.mark.slow
def test_warm_started_fine_tune_resumes_exactly(tmp_path):
  _main(tmp_path, f'--workdir={tmp_path}/base', '--config.train.steps=2',
        '--config.optim.warmup_steps=0',
        '--config.train.sample_tokens=0')
  straight = _main(tmp_path, *_classify_flags(tmp_path, tmp_path / 'straight', 8))
  assert f'parameters initialized from {tmp_path}/base/checkpoints/2' in straight
  assert '--- predictions ---' in straight and "    reference ' " in straight
  quiet = '--config.finetune.predictions=0'  # no predictions asked for: no empty block
  _main(tmp_path, *_classify_flags(tmp_path, tmp_path / 'resumed', 4), quiet)
  resumed = _main(tmp_path, *_classify_flags(tmp_path, tmp_path / 'resumed', 8), quiet,
                  '--allow_changes=train.steps')
  assert 'resuming from' in resumed and '--- predictions ---' not in resumed
  losses = {r['step']: r['loss'] for r in _records(tmp_path / 'straight') if 'loss' in r}
  again = {r['step']: r['loss'] for r in _records(tmp_path / 'resumed') if 'loss' in r}
  assert sorted(again) == list(range(1, 9))
  for step in range(5, 9):  # after the resume: same batches, same parameters
    np.testing.assert_allclose(again[step], losses[step], rtol=1e-6, err_msg=str(step))
  final = [r for r in _records(tmp_path / 'straight') if 'eval/f1_macro' in r][-1]
  assert 0.0 <= final['eval/acc'] <= 1.0 and 'eval/f1_macro_stderr' in final
