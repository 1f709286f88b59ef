"""LoRA (llmjax.model.lora): targets, the low-rank merge, frozen base parameters, adapters
alone in the optimizer state, and LoRA runs end to end (exact resume, warm starts from a
run folder and a Hugging Face folder, export to transformers, generation).

Library note, measured with qwix 0.1.8 (pip, jax 0.10.2, flax 0.12.8): on a tiny llmjax
Transformer `qwix.apply_lora_to_model(model, qwix.LoraProvider(module_path='.*', rank=2,
alpha=2.0), tokens, rngs=nnx.Rngs(1))` raises IndexError inside the blocks' lax.scan
(scan_layers=True) and inside the unrolled loop over layer slices (scan_layers=False):
qwix adds adapters to the module that makes the intercepted call, and llmjax's blocks are
split from their stacked state and merged anew per layer. Hence the functional adapters of
llmjax.model.lora.
"""

import dataclasses
import json
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llmjax import configs, generate, optim, runs, step, train, warmstart
from llmjax.convert import hf
from llmjax.convert.__main__ import main as convert_main
from llmjax.data import pipeline
from llmjax.generate import cli as generate_cli
from llmjax.model import lora
from llmjax.model.config import ModelConfig

CFG = ModelConfig(vocab_size=96, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=8, mlp_dim=64, max_len=32, tie_embeddings=False)
LORA = lora.LoraConfig(rank=2, alpha=4.0)
OPTIM = optim.OptimConfig(lr=1e-2, warmup_steps=0, weight_decay=0.0)


def _random(tree, seed: int, scale: float):
  # numpy draws: jitted JAX initializers compile for many seconds on a busy 2-core CPU.
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: (scale * rng.standard_normal(x.shape)).astype(x.dtype), tree)


def _params():
  return _random(step.abstract_model(CFG)[1], 0, 0.1)


def _trained_adapters(params, cfg=LORA, seed=1):
  """Adapters as after training: B random too (at init it is 0, the update nothing)."""
  return _random(lora.abstract(params, cfg), seed, 0.3)


def _state(tx, cfg=LORA):
  params = _params()
  adapters = _trained_adapters(params, cfg)
  return step.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                         opt_state=tx.init(adapters),
                         rng=np.array([0, 1], np.uint32), adapters=adapters)


def _flat(tree) -> dict:
  return {lora._path_name(p).removesuffix('/value'): np.asarray(v) for p, v in
          jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_targets_by_group_and_by_name():
  params = step.abstract_model(CFG)[1]
  by = lambda *targets: lora.targeted(params, lora.LoraConfig(rank=1, targets=targets))
  assert by('hidden') == ['blocks/attn/wk', 'blocks/attn/wq', 'blocks/attn/wv',
                          'blocks/mlp/w_gate', 'blocks/mlp/w_in']
  assert by('blocks/attn/w[qv]') == ['blocks/attn/wq', 'blocks/attn/wv']
  assert by('unembed', 'embedding') == ['embed/embedding', 'unembed']
  assert not any('norm' in name for name in by('*'))  # norms and biases never


@pytest.mark.parametrize('overrides, message', [
    ({'targets': ('blocks/attn/wz',)},
     r"config.lora.targets: 'blocks/attn/wz' matches no adaptable parameter; groups: .*; "
     r'parameter names: blocks/attn/wk, blocks/attn/wo, blocks/attn/wq'),
    ({'targets': ('norm',)}, "'norm' matches no adaptable parameter"),
    ({'rank': -1}, r'config.lora.rank=-1 must not be negative \(0: LoRA off\)'),
    ({'alpha': 0.0}, 'config.lora.alpha=0.0 must be positive'),
    ({'parametrization': 'mup'}, "LoRA trains in sp scale; model.parametrization='mup'"),
])
def test_bad_lora_configs_are_named(overrides, message):
  config = configs.load_file('experiments/base.py:tiny')
  config.lora.rank = 2
  for key, value in overrides.items():
    (config.model if key == 'parametrization' else config.lora)[key] = value
  with pytest.raises(configs.ConfigError, match=message):
    configs.build(config, 1)


def test_a_target_that_matches_nothing_exits_2_before_anything_is_written(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'llmjax.main', '--config', 'experiments/base.py:tiny',
       f'--workdir={tmp_path / "run"}', '--config.lora.rank=4',
       "--config.lora.targets=('blocks/mlp/w_up',)"],
      capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "'blocks/mlp/w_up' matches no adaptable parameter" in proc.stderr
  assert 'blocks/mlp/w_in' in proc.stderr and 'Traceback' not in proc.stderr
  assert not (tmp_path / 'run').exists()


def test_only_adapters_are_in_the_optimizer_state():
  tx, _ = optim.make(OPTIM, CFG, 10)
  state = jax.eval_shape(lambda: step.init_state(CFG, tx, 0, LORA))
  adapter_shapes = sorted(x.shape for x in jax.tree.leaves(state.adapters))
  moments = sorted(x.shape for x in jax.tree.leaves(state.opt_state) if x.ndim)
  assert moments == sorted(adapter_shapes * 2)  # Adam's mu and nu of each A and B
  assert len(adapter_shapes) == 2 * len(lora.targeted(state.params, LORA))
  full = jax.eval_shape(lambda: step.init_state(CFG, tx, 0))  # LoRA off
  assert not full.adapters and jax.tree.structure(full) != jax.tree.structure(state)
  assert sum(x.size for x in jax.tree.leaves(state.opt_state)) < 0.2 * sum(
      x.size for x in jax.tree.leaves(full.opt_state))


def _batch(seed=0, rows=4, length=16):
  rng = np.random.default_rng(seed)
  return {'inputs': rng.integers(0, CFG.vocab_size, (rows, length)),
          'targets': rng.integers(0, CFG.vocab_size, (rows, length)),
          'weights': np.ones((rows, length), np.float32),
          'positions': np.tile(np.arange(length), (rows, 1)),
          'segment_ids': np.ones((rows, length), np.int32)}


def test_training_moves_the_adapters_and_leaves_the_base_bitwise_unchanged():
  tx, _ = optim.make(OPTIM, CFG, 10)
  state = _state(tx)
  base, start = _flat(state.params), _flat(state.adapters)
  step_fn = jax.jit(step.make_train_step(step.abstract_model(CFG)[0], tx, step.TrainConfig(),
                                         LORA))
  losses = []
  for _ in range(4):
    state, metrics = step_fn(state, _batch())
    losses.append(float(metrics['loss']))
  after = _flat(state.params)
  for name, value in base.items():
    np.testing.assert_array_equal(after[name], value, err_msg=name)
  moved = _flat(state.adapters)
  assert all(np.abs(moved[name] - start[name]).max() > 1e-4 for name in start)
  assert losses == sorted(losses, reverse=True) and losses[-1] < losses[0] - 0.01, losses


def _contract(x, w, num_in):
  return np.tensordot(np.asarray(x, np.float64), np.asarray(w, np.float64), axes=num_in)


def _merged(params, adapters, cfg):
  return jax.jit(lora.merge, static_argnames='cfg')(params, adapters, cfg=cfg)


# What each layer's einsum contracts ('BTD,DNH->BTNH', 'BTNH,NHD->BTD', 'BTF,FD->BTD', a
# lookup along V): the tensor's input axes after its stacked `layers` axis.
INPUT_AXES = {'blocks/attn/wq': 1, 'blocks/attn/wk': 1, 'blocks/attn/wv': 1, 'blocks/attn/wo': 2,
              'blocks/mlp/w_in': 1, 'blocks/mlp/w_gate': 1, 'blocks/mlp/w_out': 1,
              'embed/embedding': 1, 'unembed': 1}


def _layers(name: str, shape) -> list:
  return list(np.ndindex(shape[0])) if name.startswith('blocks/') else [()]


def test_the_merge_is_each_tensors_low_rank_update():
  """Per layer, x . W' == x . W + (alpha / r) (x . A) . B on random inputs, contracting the
  input axes as the layers' einsums do, computed without ever forming A @ B."""
  cfg = lora.LoraConfig(rank=2, alpha=4.0, targets=('*',))
  params = _params()
  adapters = _trained_adapters(params, cfg)
  merged, base, named = _flat(_merged(params, adapters, cfg)), _flat(params), _flat(adapters)
  assert sorted(n for n in merged if not np.array_equal(merged[n], base[n])) == sorted(
      lora.targeted(params, cfg))
  assert sorted(lora.targeted(params, cfg)) == sorted(INPUT_AXES)
  for name, num_in in INPUT_AXES.items():
    for layer in _layers(name, base[name].shape):
      w, a, b = base[name][layer], named[f'{name}/a'][layer], named[f'{name}/b'][layer]
      x = np.random.default_rng(0).normal(size=(3, *w.shape[:num_in]))
      unmerged = _contract(_contract(x, a, num_in), b, 1)
      adapted = _contract(x, w, num_in) + (cfg.alpha / cfg.rank) * unmerged
      np.testing.assert_allclose(_contract(x, merged[name][layer], num_in), adapted,
                                 rtol=1e-5, atol=1e-5, err_msg=name)


def test_the_merged_model_equals_the_adapter_model_on_logits():
  """An adapted output head computed unmerged, h U + (alpha / r) (h A) B, from the model's
  own hidden states, against the logits of the merged model."""
  cfg = lora.LoraConfig(rank=2, alpha=4.0, targets=('unembed', 'hidden', 'output'))
  params = _params()
  adapters = _trained_adapters(params, cfg)
  graphdef = step.abstract_model(CFG)[0]

  @jax.jit
  def forward(params, tokens):  # (logits, the stream the output head reads)
    model = nnx.merge(graphdef, params)
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    hidden = model.hidden(model.embed_tokens(tokens, positions), positions,
                          jnp.ones_like(tokens))
    return model(tokens), model.final_norm(hidden)

  tokens = jnp.asarray(_batch()['inputs'])
  logits, hidden = forward(_merged(params, adapters, cfg), tokens)
  head = adapters['unembed']
  adapter_logits = (_contract(hidden, params['unembed'][...], 1) + (cfg.alpha / cfg.rank) *
                    _contract(_contract(hidden, head['a'][...], 1), head['b'][...], 1))
  np.testing.assert_allclose(logits, adapter_logits, atol=1e-5, rtol=1e-5)
  base_logits, _ = forward(params, tokens)
  assert np.abs(np.asarray(logits - base_logits)).max() > 0.1  # the update is not nothing


def test_each_update_has_rank_at_most_r():
  params = _params()
  for rank in (1, 3):
    cfg = lora.LoraConfig(rank=rank, alpha=8.0, targets=('*',))
    merged, base = _flat(_merged(params, _trained_adapters(params, cfg), cfg)), _flat(params)
    for name, num_in in INPUT_AXES.items():
      update = (merged[name].astype(np.float64) - base[name])
      for layer in _layers(name, update.shape):
        matrix = update[layer].reshape(int(np.prod(update[layer].shape[:num_in])), -1)
        singular = np.linalg.svd(matrix, compute_uv=False)
        assert singular[rank - 1] > 1e-3 * singular[0], (name, rank, singular[:rank + 1])
        assert singular[rank] < 1e-5 * singular[0], (name, rank, singular[:rank + 1])


# Runs: a tiny Llama-shaped model (exportable) on synthetic rows, pretrained, then LoRA.
def _config(steps: int, **lora_fields):
  config = configs.defaults()
  for key, value in dataclasses.asdict(CFG).items():
    config.model[key] = value
  config.data.source = 'synthetic:vocab=64,doc_len=16'
  config.data.seq_len, config.data.global_batch_size, config.data.shuffle_window = 16, 8, 1
  config.train.steps, config.train.log_every, config.train.eval_every = steps, 1, steps
  config.train.eval_batches, config.train.sample_tokens = 1, 0
  config.optim.lr, config.optim.warmup_steps = 3e-2, 0
  config.checkpoint.every_steps, config.checkpoint.keep_log_spaced = 3, False
  config.metrics.tensorboard = False
  config.metrics.peak_flops_per_device = 1e12  # skips measuring the CPU's matmul peak
  for key, value in lora_fields.items():
    config.lora[key] = value
  return config


def _train(config, workdir):
  exp = configs.build(config, jax.device_count())
  train.run(exp, workdir, configs.as_dict(exp))
  return exp


def _losses(workdir) -> dict[int, float]:
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  return {r['step']: r['loss'] for r in records if 'loss' in r}


@pytest.fixture(scope='module')
def lora_run(tmp_path_factory):
  """(pretrained run folder, LoRA fine-tune of it): 6 steps each, checkpoints at 3 and 6."""
  root = tmp_path_factory.mktemp('lora')
  _train(_config(6), root / 'base')
  config = _config(6, rank=4, alpha=8.0)
  config.init_from = str(root / 'base')
  _train(config, root / 'lora')
  return root / 'base', root / 'lora'


@pytest.mark.slow  # two training runs (the fixture), about 30 s of CPU
def test_a_lora_run_warm_starts_its_base_and_keeps_it_bitwise(lora_run):
  base, tuned = runs.RunFolder(lora_run[0]), runs.RunFolder(lora_run[1])
  state = tuned.state()
  assert state.adapters and int(state.step) == 6
  jax.tree.map(np.testing.assert_array_equal, _flat(state.params), _flat(base.params()))
  # Readers (generation, export, analysis, warm starts) get the merged weights.
  merged = _flat(tuned.params())
  exp = tuned.experiment
  expected = _flat(_merged(state.params, state.adapters, exp.lora))
  for name, value in expected.items():
    np.testing.assert_allclose(merged[name], value, rtol=1e-6, atol=1e-7, err_msg=name)
  changed = [n for n in merged if not np.array_equal(merged[n], _flat(base.params())[n])]
  assert sorted(changed) == sorted(lora.targeted(state.params, exp.lora))
  target = step.placed(step.abstract_model(CFG)[1], jax.sharding.SingleDeviceSharding(
      jax.devices()[0]))
  warm, _ = warmstart.params(str(lora_run[1]), target)
  jax.tree.map(np.testing.assert_array_equal, _flat(warm), merged)


@pytest.mark.slow  # two training runs (the fixture), about 30 s of CPU
def test_the_final_eval_loss_is_the_merged_models(lora_run):
  tuned = runs.RunFolder(lora_run[1])
  exp = tuned.experiment
  model = tuned.model()
  nll = weight = 0.0
  for item in pipeline.eval_batches(pipeline.load(exp.data), exp.data):
    batch = item['batch']
    logits = model(batch['inputs'], batch['positions'], batch['segment_ids'])
    nll += float(step.cross_entropy(logits, batch['targets'], batch['weights'], 0.0)[0])
    weight += float(batch['weights'].sum())
  last = [r for r in tuned.metrics_records() if 'eval/loss' in r][-1]
  np.testing.assert_allclose(last['eval/loss'], nll / weight, rtol=1e-5)


@pytest.mark.slow  # two training runs (the fixture), about 30 s of CPU
def test_a_resumed_lora_fine_tune_equals_the_uninterrupted_run(lora_run, tmp_path):
  """Checkpoint 6 dropped, the run resumes from 3 (adapters, their moments, data position):
  every later loss and the final state (base, adapters, optimizer) are bitwise the same."""
  resumed = tmp_path / 'resumed'
  shutil.copytree(lora_run[1], resumed)
  shutil.rmtree(resumed / 'checkpoints' / '6')
  exp = runs.RunFolder(lora_run[1]).experiment
  train.run(exp, resumed, configs.as_dict(exp))
  assert _losses(resumed) == _losses(lora_run[1])
  want, got = runs.RunFolder(lora_run[1]), runs.RunFolder(resumed)
  jax.tree.map(np.testing.assert_array_equal, _flat(got.state(6)), _flat(want.state(6)))
  data = lambda run: json.loads((run.step_folder(6) / 'data' / 'metadata').read_text())
  assert data(got) == data(want) and data(got)['counts']['tokens_seen'] == 6 * 8 * 16


def _greedy(model, prompt: str, tokenizer) -> str:
  ids = np.array([tokenizer.eot_id, *tokenizer.encode(prompt)], np.int32)
  out = generate.generate(model, [ids], max_new_tokens=8, temperature=0.0)
  return tokenizer.decode(np.concatenate([tokenizer.encode(prompt), out.tokens[0]]))


@pytest.mark.slow  # two training runs (the fixture), about 30 s of CPU
def test_generation_and_export_use_the_merged_weights(lora_run, tmp_path, capsys):
  transformers = pytest.importorskip('transformers')
  hf_reference = pytest.importorskip('hf_reference')
  base, tuned = runs.RunFolder(lora_run[0]), runs.RunFolder(lora_run[1])
  tokenizer = tuned.tokenizer
  expected = _greedy(tuned.model(), '3 1 4', tokenizer)
  assert expected != _greedy(base.model(), '3 1 4', tokenizer)  # else this proves nothing
  capsys.readouterr()
  assert generate_cli.main(['--workdir', str(lora_run[1]), '--prompt', '3 1 4',
                            '--temperature', '0', '--max_new_tokens', '8']) == 0
  assert capsys.readouterr().out.strip() == expected.strip()

  out = tmp_path / 'hf'
  assert convert_main(['llmjax-to-hf', '--workdir', str(lora_run[1]), '--out', str(out)]) == 0
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
  tokens = np.random.default_rng(0).integers(0, 64, (2, 16))
  ours = np.asarray(tuned.model()(jnp.asarray(tokens)))
  np.testing.assert_allclose(hf_reference.logits(reloaded, tokens), ours, atol=1e-4)
  assert np.abs(ours - np.asarray(base.model()(jnp.asarray(tokens)))).max() > 1e-2


@pytest.mark.slow  # transformers, and a warm-started LoRA run (~30 s of CPU)
def test_a_lora_fine_tune_of_a_hugging_face_model(tmp_path, capsys):
  """Warm start from an HF Llama folder: the first loss is transformers' own, and after
  training the base weights are still the HF checkpoint's, bit for bit."""
  transformers = pytest.importorskip('transformers')
  hf_reference = pytest.importorskip('hf_reference')
  torch = pytest.importorskip('torch')
  reference = hf_reference.random_model(transformers.LlamaConfig(
      vocab_size=CFG.vocab_size, hidden_size=CFG.d_model, intermediate_size=CFG.mlp_dim,
      num_hidden_layers=CFG.num_layers, num_attention_heads=CFG.num_heads,
      num_key_value_heads=CFG.num_kv_heads, max_position_embeddings=CFG.max_len,
      rope_theta=CFG.rope_theta, rms_norm_eps=CFG.norm_eps, tie_word_embeddings=False))
  folder = tmp_path / 'hf'
  reference.save_pretrained(folder, safe_serialization=True)
  config = _config(3, rank=2, alpha=4.0, targets=('blocks/attn/w[qv]',))
  config.init_from = f'hf:{folder}'
  exp = configs.build(config, jax.device_count())
  batch = next(iter(pipeline.train_dataset(pipeline.load(exp.data), exp.data)))['batch']
  logits = torch.tensor(hf_reference.logits(reference, batch['inputs']))
  hf_loss = float(torch.nn.functional.cross_entropy(
      logits.reshape(-1, CFG.vocab_size), torch.tensor(batch['targets']).long().reshape(-1),
      reduction='none').reshape(batch['weights'].shape).mul(torch.tensor(batch['weights']))
      .sum() / batch['weights'].sum())
  train.run(exp, tmp_path / 'run', configs.as_dict(exp))
  assert f'parameters initialized from {folder.resolve()}' in capsys.readouterr().out
  np.testing.assert_allclose(_losses(tmp_path / 'run')[1], hf_loss, rtol=1e-5)
  state = runs.RunFolder(tmp_path / 'run').state()
  imported, _ = hf.load_hf(folder)
  jax.tree.map(np.testing.assert_array_equal, _flat(state.params),
               _flat(nnx.state(imported, nnx.Param)))
  assert sorted(_flat(state.adapters)) == ['blocks/attn/wq/a', 'blocks/attn/wq/b',
                                           'blocks/attn/wv/a', 'blocks/attn/wv/b']
