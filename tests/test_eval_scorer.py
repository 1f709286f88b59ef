"""The packed scorer: packed = each example alone (log-likelihoods and pooled hidden
states), one compilation per length bucket, bad inputs by message."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llmjax import generate
from llmjax.eval import scorer
from llmjax.model.config import ModelConfig
from llmjax.model.transformer import Transformer

CFG = ModelConfig(vocab_size=257, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=8, mlp_dim=64, max_len=32)


def random_model(cfg: ModelConfig = CFG, seed: int = 0) -> Transformer:
  """Parameters drawn by numpy (no init to compile), norm scales perturbed so a misplaced
  one would show."""
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0))))
  rng = np.random.default_rng(seed)

  def draw(param):
    value = (param.group == 'norm') + 0.2 * rng.standard_normal(param.get_value().shape)
    return param.replace(jnp.asarray(value, param.get_value().dtype))

  return nnx.merge(graphdef, jax.tree.map(draw, abstract,
                                          is_leaf=lambda x: isinstance(x, nnx.Variable)))


@pytest.fixture(scope='module')
def model():
  return random_model()


def random_pairs(n, seed=0, longest=20):
  rng = np.random.default_rng(seed)
  pairs = []
  for _ in range(n):
    context = [256, *rng.integers(0, 256, rng.integers(0, longest - 4))]
    pairs.append((context, list(rng.integers(0, 256, rng.integers(1, 5)))))
  return pairs


def test_packed_loglikelihoods_equal_each_pair_alone(model):
  pairs = random_pairs(13) + [([256] * 40, [1, 2, 3])]  # the last one is cut to max_len
  packed = scorer.Scorer(model, rows=2).loglikelihood(pairs)
  for i, (context, continuation) in enumerate(pairs):
    alone = generate.score(model, [context], [continuation])
    np.testing.assert_allclose(packed.sums[i], alone.sums[0], atol=1e-5, rtol=1e-5,
                               err_msg=f'pair {i}')
    assert packed.greedy[i] == alone.greedy[0] and packed.counts[i] == len(continuation)
  # Packing did put several pairs in one row, in rows of two widths (else this test would
  # check less than it says).
  places = scorer._first_fit([len(c) + len(x) - 1 for c, x in pairs], 32)
  assert sum(p.slot > 0 for p in places) >= 3 and {p.width for p in places} == {16, 32}


@jax.jit
def _forward(params, tokens):
  """Logits and final-norm hidden states of BT tokens padded on the right: causal
  attention keeps a row's first n positions what they are for its first n tokens alone."""
  model = nnx.merge(GRAPHDEF, params)
  positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
  hidden = model.hidden(model.embed_tokens(tokens, positions), positions,
                        jnp.ones_like(tokens))
  return model.logits(hidden), model.final_norm(hidden)


GRAPHDEF = nnx.split(random_model())[0]


def padded(rows):
  out = np.zeros((len(rows), CFG.max_len), np.int32)
  for i, row in enumerate(rows):
    out[i, :len(row)] = row
  return out


def test_greedy_flags_the_argmax_continuation(model):
  best = [256, 10, 20]
  for _ in range(3):
    logits, _ = _forward(nnx.split(model)[1], padded([best]))
    best.append(int(np.argmax(logits[0, len(best) - 1])))
  out = scorer.Scorer(model).loglikelihood([(best[:3], best[3:]),
                                            (best[:3], [best[3], best[4], best[5] + 1])])
  assert out.greedy.tolist() == [True, False]


@pytest.mark.parametrize('pooling', ['mean', 'last'])
def test_packed_pooled_states_equal_each_text_alone(model, pooling):
  texts = [c + x for c, x in random_pairs(9, seed=1)] + [[256]]
  pooled = scorer.Scorer(model, rows=2).embed(texts, pooling)
  _, hidden = _forward(nnx.split(model)[1], padded(texts))
  for i, text in enumerate(texts):
    states = hidden[i, :len(text)]
    kept = states[1:] if len(text) > 1 else states
    expected = kept.mean(axis=0) if pooling == 'mean' else states[-1]
    np.testing.assert_allclose(pooled[i], expected, atol=1e-5, rtol=1e-5, err_msg=f'text {i}')


def test_short_segments_fill_the_gaps_of_long_rows_first():
  places = scorer._first_fit([30, 5, 20, 2, 9, 9], 32)
  assert [(p.width, p.row, p.start) for p in places] == [
      (32, 0, 0), (16, 0, 9), (32, 1, 0), (32, 0, 30), (32, 1, 20), (16, 0, 0)]


def test_one_compilation_per_length_bucket(model):
  score = scorer.Scorer(model, rows=4)
  score.loglikelihood(random_pairs(5, seed=2, longest=12))
  size = scorer._token_logprobs._cache_size()
  score.loglikelihood(random_pairs(30, seed=3, longest=12))  # more rows, same bucket (16)
  assert scorer._token_logprobs._cache_size() == size
  score.loglikelihood(random_pairs(3, seed=4, longest=30))  # bucket 32: one more
  assert scorer._token_logprobs._cache_size() == size + 1


@pytest.mark.parametrize('pairs, match', [
    ([], 'no pairs to score'),
    ([([], [1])], 'context 0 is empty'),
    ([([256], [])], 'continuation 0 has 0 tokens; it needs 1 to max_len=32'),
    ([([256], [1]), ([256, 300], [1])], 'context 1 holds token id 300 outside the vocabulary'),
    ([([256], [-1])], 'continuation 0 holds token id -1'),
])
def test_bad_pairs_name_the_problem(model, pairs, match):
  with pytest.raises(ValueError, match=match):
    scorer.Scorer(model).loglikelihood(pairs)


def test_bad_embedding_inputs_name_the_problem(model):
  with pytest.raises(ValueError, match="pooling must be 'mean' or 'last', got 'max'"):
    scorer.Scorer(model).embed([[256, 1]], 'max')
  with pytest.raises(ValueError, match='text 1 is empty'):
    scorer.Scorer(model).embed([[256, 1], []])
  with pytest.raises(ValueError, match='rows must be >= 1'):
    scorer.Scorer(model, rows=0)


def test_on_a_mesh_rows_are_sharded_like_training_and_scores_unchanged(model):
  from llmjax import sharding
  mesh = sharding.make_mesh(2, 2, 2)  # data x fsdp x tensor over the 8 test devices
  graphdef, params = nnx.split(model)
  placed = jax.device_put(params, sharding.param_shardings(params, mesh, sharding.DEFAULT_RULES))
  on_mesh = scorer.Scorer(nnx.merge(graphdef, placed), rows=3)
  # Rows split 4 ways (data x fsdp, the 'batch' rule): 3 rows round up to 4.
  assert on_mesh.rows == 4
  assert on_mesh.rows_sharding.spec == jax.sharding.PartitionSpec(('data', 'fsdp'), None)
  assert on_mesh._placed(np.zeros((4, 16), np.int32)).sharding.spec[0] == ('data', 'fsdp')
  # Short pairs and texts: one width bucket, so one sharded compilation each (speed).
  pairs, texts = random_pairs(6, longest=12), [c + x for c, x in random_pairs(3, 1, longest=12)]
  alone = scorer.Scorer(model, rows=4)
  assert alone.rows_sharding is None
  np.testing.assert_allclose(on_mesh.loglikelihood(pairs).sums, alone.loglikelihood(pairs).sums,
                             atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(on_mesh.embed(texts), alone.embed(texts), atol=1e-5, rtol=1e-5)
