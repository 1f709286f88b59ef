"""metrics.jsonl: resuming keeps every complete record, whatever a kill left behind."""

import json

from llmjax import metrics

CFG = metrics.MetricsConfig(tensorboard=False)


def _write(path, records, tail=''):
  path.write_text(''.join(json.dumps(r) + '\n' for r in records) + tail)


def test_a_torn_last_line_is_dropped_once_and_every_complete_record_kept(tmp_path, capsys):
  path = tmp_path / 'metrics.jsonl'
  records = [{'step': s, 'loss': 1.0 / s} for s in range(1, 6)]
  _write(path, records, tail='{"step": 6, "lo')  # killed mid-write
  writer = metrics.MetricsWriter(CFG, tmp_path, {}, after_step=5)
  writer.write(6, {'loss': 0.1})
  writer.close()
  err = capsys.readouterr().err
  assert err.count('dropped its torn last line') == 1 and 'every complete record is kept' in err
  assert metrics.read_records(path) == records + [{'step': 6, 'loss': 0.1}]
  assert (tmp_path / 'metrics.jsonl.damaged').read_text() == '{"step": 6, "lo\n'
  metrics.MetricsWriter(CFG, tmp_path, {}, after_step=6).close()  # said once: now clean
  assert 'dropped' not in capsys.readouterr().err
  assert len(metrics.read_records(path)) == 6


def test_resume_drops_only_records_after_the_checkpoint(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  _write(path, [{'step': s, 'loss': float(s)} for s in range(1, 9)])
  metrics.MetricsWriter(CFG, tmp_path, {}, after_step=5).close()
  assert [r['step'] for r in metrics.read_records(path)] == [1, 2, 3, 4, 5]
  assert not list(tmp_path.glob('.metrics.jsonl*'))  # the atomic rewrite left nothing


def test_read_records_skips_a_torn_line(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  _write(path, [{'step': 1}], tail='{"ste')
  assert metrics.read_records(path) == [{'step': 1}]
