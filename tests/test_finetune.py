"""Fine-tuning tasks (llmjax.finetune): the completion-only loss, packing, the classify head,
built-in training examples, exact resume of the fine-tune data."""

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from llmjax import configs, optim, step
from llmjax.data import pipeline, pystdlib
from llmjax.data.tokenizers import ByteTokenizer
from llmjax.eval import builtin_code
from llmjax.finetune import encode, examples, report
from llmjax.finetune import task as finetune_task
from llmjax.model.config import ModelConfig
from llmjax.model.transformer import Transformer

TOKENIZER = ByteTokenizer()
MODEL = ModelConfig(vocab_size=257, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                    head_dim=8, mlp_dim=64, max_len=64)
SFT = {'id': 'x', 'segments': [('Q: two plus two?', False), (' A: four', True)]}


def _batch(rows: list[dict], seq_len: int) -> dict:
  """Rows of one example each, or (a list of lists) several packed in one row."""
  out = {k: np.zeros((len(rows), seq_len), np.float32 if k == 'weights' else np.int32)
         for k in ('inputs', 'targets', 'weights', 'positions', 'segment_ids')}
  for i, packed in enumerate(rows):
    start = 0
    for segment, row in enumerate(packed if isinstance(packed, list) else [packed], 1):
      n = len(row['inputs'])
      for key in ('inputs', 'targets', 'weights'):
        out[key][i, start:start + n] = row[key]
      out['positions'][i, start:start + n] = np.arange(n)
      out['segment_ids'][i, start:start + n] = segment
      start += n
  return out


def _model():
  return Transformer(MODEL, nnx.Rngs(params=0))


def _summed_nll(params, graphdef, batch):
  return jax.jit(functools.partial(step.eval_step, graphdef=graphdef))(params, batch)['nll']


@functools.partial(jax.jit, static_argnums=0)
def _log_probs(graphdef, params, ids):
  n = ids.shape[1]
  logits = nnx.merge(graphdef, params)(ids, jnp.arange(n)[None], jnp.ones((1, n), jnp.int32))
  return jax.nn.log_softmax(logits, -1)[0]


def test_completion_only_loss_is_the_loss_of_the_completion_alone():
  row = encode.sft_row(SFT, TOKENIZER, 64, 'error')
  graphdef, params = nnx.split(_model(), nnx.Param)
  batch = _batch([row], 64)
  # By hand: -log p(completion + end-of-text | prompt), from the model's log-softmax.
  ids = [TOKENIZER.eot_id, *TOKENIZER.encode('Q: two plus two?'), *TOKENIZER.encode(' A: four'),
         TOKENIZER.eot_id]
  first = 1 + len(TOKENIZER.encode('Q: two plus two?'))  # index of the completion's first id
  log_probs = _log_probs(graphdef, params, jnp.asarray([ids[:-1]]))
  by_hand = -sum(float(log_probs[t - 1, ids[t]]) for t in range(first, len(ids)))
  np.testing.assert_allclose(float(_summed_nll(params, graphdef, batch)), by_hand, rtol=1e-5)
  assert batch['weights'].sum() == len(ids) - first


def test_prompt_targets_get_no_gradient():
  row = encode.sft_row(SFT, TOKENIZER, 64, 'error')
  graphdef, params = nnx.split(_model(), nnx.Param)
  batch = _batch([row], 64)
  # Targets 0 .. P-1 predict the prompt's P tokens (by construction, not by the weights).
  prompt_targets = len(TOKENIZER.encode('Q: two plus two?'))
  perturbed = dict(batch, targets=batch['targets'].copy())
  perturbed['targets'][0, :prompt_targets] = (batch['targets'][0, :prompt_targets] + 7) % 256
  grads = jax.jit(functools.partial(step._gradients, rng=jax.random.key(0), graphdef=graphdef,
                                    num_microbatches=1, z_loss=1e-4))
  (g1, s1), (g2, s2) = grads(params, batch), grads(params, perturbed)
  for a, b in zip(jax.tree.leaves((g1, s1)), jax.tree.leaves((g2, s2))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_packed_sft_equals_unpacked():
  other = {'id': 'y', 'segments': [('def f(', False), ('x): return x', True)]}
  rows = [encode.sft_row(e, TOKENIZER, 64, 'error') for e in (SFT, other)]
  graphdef, params = nnx.split(_model(), nnx.Param)
  packed = _summed_nll(params, graphdef, _batch([rows], 64))
  alone = sum(float(_summed_nll(params, graphdef, _batch([r], 64))) for r in rows)
  np.testing.assert_allclose(float(packed), alone, rtol=1e-5)


def test_truncate_left_keeps_the_completion_and_error_says_what_to_set():
  long = {'id': 'f.jsonl line 3', 'segments': [('p' * 100, False), (' done', True)]}
  with pytest.raises(examples.ExampleError, match=r'f.jsonl line 3: .*finetune.truncate=left'):
    encode.sft_row(long, TOKENIZER, 32, 'error')
  row = encode.sft_row(long, TOKENIZER, 32, 'left')
  assert len(row['inputs']) == 32
  assert TOKENIZER.decode(row['targets'][row['weights'] > 0][:-1]) == ' done'


def test_chat_template_weights_assistant_turns_only():
  segments = examples.chat_segments([{'role': 'user', 'text': 'hi'},
                                     {'role': 'assistant', 'text': 'hello'}], 'f line 1')
  assert ''.join(t for t, _ in segments) == '<|user|>\nhi\n<|assistant|>\nhello\n'
  assert ''.join(t for t, w in segments if w) == 'hello\n'
  with pytest.raises(examples.ExampleError, match="f line 1: no 'assistant' turn"):
    examples.chat_segments([{'role': 'user', 'text': 'hi'}], 'f line 1')


def test_label_tokens_follow_the_common_prefix():
  prefix, heads = encode.label_tokens((' library', ' test'), TOKENIZER)
  assert TOKENIZER.decode(np.asarray(prefix)) == ' ' and heads == [ord('l'), ord('t')]
  with pytest.raises(examples.ExampleError, match='each needs a token of its own'):
    encode.label_tokens((' test', ' tests'), TOKENIZER)


def _jsonl(path, records):
  path.write_text(''.join(json.dumps(r) + '\n' for r in records))
  return f'jsonl:{path}'


def _separable(rng, n):
  """A text holding an 'a' among fillers is 'yes', one holding a 'b' is 'no'."""
  out = []
  for _ in range(n):
    label = rng.choice(['yes', 'no'])
    filler = list(rng.choice(list('xyz '), rng.integers(3, 12)))
    filler.insert(int(rng.integers(len(filler) + 1)), 'a' if label == 'yes' else 'b')
    out.append({'text': ''.join(filler), 'label': label})
  return out


def _experiment(tmp_path, **finetune):
  config = configs.defaults()
  config.model.update(vocab_size=257, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                      mlp_dim=64, max_len=32)
  config.data.update(seq_len=32, global_batch_size=16, packing='first_fit', shuffle_window=64)
  config.finetune.update(finetune)
  return configs.build(config, 1)


def test_classify_head_learns_a_separable_task(tmp_path):
  rng = np.random.default_rng(0)
  exp = _experiment(tmp_path, task='classify', labels=('yes', 'no'),
                    train_data=_jsonl(tmp_path / 't.jsonl', _separable(rng, 200)),
                    eval_data=_jsonl(tmp_path / 'e.jsonl', _separable(rng, 64)))
  task = finetune_task.make(exp)
  tx, _ = optim.make(dataclasses.replace(exp.optim, lr=1e-2, warmup_steps=0), exp.model, 60)
  graphdef, _ = step.abstract_model(exp.model)
  state = step.init_state(exp.model, tx, 0)
  step_fn = jax.jit(step.make_train_step(graphdef, tx, exp.train, head=task.head))
  batches = iter(pipeline.train_dataset(task.corpus, exp.data))
  for _ in range(60):
    state, _ = step_fn(state, next(batches)['batch'])
  metrics = report.ClassifyMetrics(task, graphdef, pipeline.eval_batches(task.corpus, exp.data),
                                   None)(state.params)
  assert metrics['eval/acc'] >= 0.97 and metrics['eval/f1_macro'] >= 0.97, metrics


def test_fine_tune_data_resumes_exactly(tmp_path):
  rng = np.random.default_rng(1)
  records = [{'prompt': f'n{i}:', 'completion': ' ' + 'x' * int(rng.integers(1, 9))}
             for i in range(40)]
  exp = _experiment(tmp_path, task='sft', train_data=_jsonl(tmp_path / 't.jsonl', records),
                    eval_data=_jsonl(tmp_path / 'e.jsonl', records[:4]))
  corpus = finetune_task.make(exp).corpus
  first = iter(pipeline.train_dataset(corpus, exp.data))
  for _ in range(5):  # past the first epoch (40 examples, ~3 per row, 16 rows a batch)
    next(first)
  saved = json.loads(json.dumps(first.get_state()))  # as a checkpoint stores it
  expected = [next(first)['batch'] for _ in range(3)]
  second = iter(pipeline.train_dataset(corpus, exp.data))
  pipeline.restore_state(second, saved)
  for want in expected:
    got = next(second)['batch']
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  assert any(w.sum() < w.size for w in (b['weights'] for b in expected))  # masked prompts


def test_builtin_training_examples_never_come_from_held_out_files():
  held_out = {p.relative_to(pystdlib.stdlib_root()).as_posix()
              for p in pystdlib.held_out_files(0.01, 0)}
  for name in ('code_classify', 'code_summarize', 'code_next_line'):
    train = builtin_code.training_examples(name, max_files=12)
    assert train and all(e['id'].startswith('train:') for e in train)
    assert not {e['source'] for e in train} & held_out, name
  evaluated = builtin_code.code_classify().examples
  assert {e['source'] for e in evaluated} <= held_out


def test_classify_rows_pool_the_last_token_of_a_decoder_and_the_cls_token_of_an_encoder():
  example = {'id': 'f line 1', 'text': 'abcdef', 'label': 1}
  prefix = TOKENIZER.encode(' ').tolist()
  decoder = encode.classify_row(example, TOKENIZER, prefix, True, 16, 'error')
  assert decoder['inputs'].tolist() == [TOKENIZER.eot_id, *b'abcdef', *b' ']
  assert decoder['weights'].tolist() == [0.0] * 7 + [1.0] and decoder['targets'][-1] == 1
  encoder = encode.classify_row(example, TOKENIZER, prefix, False, 4, 'left')
  assert encoder['inputs'].tolist() == [TOKENIZER.eot_id, *b'def']  # cls kept, oldest text cut
  assert encoder['weights'].tolist() == [1.0, 0, 0, 0] and encoder['targets'][0] == 1
  with pytest.raises(examples.ExampleError, match='f line 1: 7 tokens exceed data.seq_len=4'):
    encode.classify_row(example, TOKENIZER, prefix, False, 4, 'error')


def test_tfds_sets_fine_tune_from_their_train_split(tmp_path):
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
    classify = finetune_task.make(_experiment(
        tmp_path, task='classify', train_data='tfds:glue/sst2', max_examples=5, truncate='left'))
    sft = finetune_task.make(_experiment(tmp_path, task='sft', train_data='tfds:squad',
                                         truncate='left'))
    with pytest.raises(examples.ExampleError,
                       match='tfds:squad is a generate task; finetune.task=classify needs'):
      finetune_task.make(_experiment(tmp_path, task='classify', train_data='tfds:squad',
                                     num_labels=2))
  # The dataset's class names are the label words; the train split is what is trained on,
  # the eval task's split (validation) what is held out.
  assert classify.label_words == (' negative', ' positive')
  assert classify.corpus.info[pipeline.EXAMPLES_INFO] == 5 and len(classify.corpus.train) == 5
  assert classify.held_out and all('/validation/' in e['id'] for e in classify.held_out)
  assert len(sft.corpus.train) == 8 and all(r['weights'].sum() > 0 for r in sft.corpus.train)
