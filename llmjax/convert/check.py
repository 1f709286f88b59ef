"""The logit checker: a Hugging Face folder run by transformers against the same model in llmjax.

`compare` feeds both implementations the same prompts and measures the largest |difference|
of each layer's output (the residual stream after the embeddings and after each block),
of the final norm and of the logits, so a conversion that goes wrong says where: the first
output past the tolerance is the first layer that computes something else. The llmjax side
is the folder's own import, or a run folder's checkpoint (to check an export).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from llmjax import runs
from llmjax.convert import hf, hf_weights
from llmjax.convert.hf_config import ConversionError, architecture_mismatch
from llmjax.model import options
from llmjax.model import parametrization as pz
from llmjax.model.attention import attention_mask, cross_mask
from llmjax.model.transformer import Transformer

TOLERANCE = 1e-4  # float32 on both sides: differences are rounding, far below this


@dataclasses.dataclass(frozen=True)
class Report:
  names: list[str]  # 'embeddings', 'layer 0', ..., 'final norm', 'logits'
  max_diff: list[float]  # over every prompt, position and feature
  source: str  # what the llmjax side is

  def first_mismatch(self, tolerance: float = TOLERANCE) -> str | None:
    return next((n for n, d in zip(self.names, self.max_diff) if not d <= tolerance), None)

  def lines(self, tolerance: float = TOLERANCE) -> list[str]:
    width = max(map(len, self.names))
    rows = [f'  {n:<{width}}  {d:.3e}' for n, d in zip(self.names, self.max_diff)]
    bad = self.first_mismatch(tolerance)
    verdict = (f'first output past {tolerance:g}: {bad}' if bad else
               f'every output within {tolerance:g}')
    return [f'max |transformers - llmjax ({self.source})| per output:', *rows, verdict]


def _llmjax_outputs(model, tokens: np.ndarray) -> list[np.ndarray]:
  """Embeddings, each block's output (the last through the final norm of a pre-norm
  model), the logits (BTD ..., BTV)."""
  tokens = jnp.asarray(tokens)
  positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
  mask = attention_mask(jnp.ones_like(tokens), options.ARCHITECTURES[model.cfg.arch].causal)
  x = model.embed_tokens(tokens, positions)
  outputs = [x]
  graphdef, stacked = nnx.split(model.blocks)
  for i in range(model.cfg.num_layers):
    x = nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], stacked))(x, positions, mask)
    outputs.append(x)
  if _has_final_norm(model.cfg):
    outputs[-1] = model.final_norm(x)  # what transformers reports for its last layer
  return [np.asarray(o, np.float32) for o in (*outputs, model.logits(x))]


def _encoder_decoder_outputs(model, tokens: np.ndarray) -> list[np.ndarray]:
  """An encoder-decoder's outputs as transformers lists them: the encoder's embeddings and
  blocks (the last through its final norm), then the decoder's (reading the same tokens),
  then the logits."""
  tokens = jnp.asarray(tokens)
  positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
  ones = jnp.ones_like(tokens)
  relative = options.POSITIONS[model.cfg.positions].relative
  stacks = [(model.encoder_blocks, model.encoder_norm, attention_mask(ones, causal=False),
             dict(bias=model.encoder_relative_bias(positions, positions)) if relative else {}),
            (model.blocks, model.final_norm, attention_mask(ones, causal=True),
             dict(bias=model.relative_bias(positions, positions)) if relative else {})]
  outputs = []
  for k, (blocks, norm, mask, extras) in enumerate(stacks):
    if k == 1:  # the decoder reads the encoder's normed output
      extras = {**extras, 'memory': outputs[-1], 'cross_mask': cross_mask(ones, ones)}
    x = model.embed_tokens(tokens, positions)
    outputs.append(x)
    graphdef, stacked = nnx.split(blocks)
    for i in range(jax.tree.leaves(stacked)[0].shape[0]):
      x = nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], stacked))(x, positions, mask,
                                                                           **extras)
      outputs.append(x)
    outputs[-1] = norm(x)
  return [np.asarray(o, np.float32) for o in (*outputs, model.logits(x))]


def _as_exported(model):
  """A mup/completep model as the sp model its export computes (multipliers folded into
  the weights, `hf_weights.fold_multipliers`): the same logits, and layer outputs that
  compare with transformers' one by one (a tied head's logit multiplier sits in the final
  norm there)."""
  if pz.is_sp(model.cfg):
    return model
  params = hf_weights.fold_multipliers(
      model.cfg, jax.device_get(nnx.state(model, nnx.Param).to_pure_dict()))
  sp = dataclasses.replace(model.cfg, parametrization='sp')
  graphdef, state = nnx.split(nnx.eval_shape(lambda: Transformer(sp, nnx.Rngs(0))))
  state.replace_by_pure_dict(jax.tree.map(jnp.asarray, params))
  return nnx.merge(graphdef, state)


def _has_final_norm(cfg) -> bool:
  return cfg.norm_position == 'pre'  # post-norm blocks end normalized


def _transformers_outputs(folder, tokens: np.ndarray, cfg) -> list[np.ndarray]:
  try:
    import torch
    import transformers
  except ImportError:
    raise ValueError('the checker runs the reference in transformers: pip install torch '
                     'transformers') from None
  if options.ARCHITECTURES[cfg.arch].cross_attention:
    reference = transformers.AutoModelForSeq2SeqLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
      out = reference.eval()(input_ids=torch.tensor(tokens),
                             decoder_input_ids=torch.tensor(tokens), output_hidden_states=True)
    hidden = out.encoder_hidden_states + out.decoder_hidden_states
    return [h.numpy() for h in hidden] + [out.logits.numpy()]
  auto = (transformers.AutoModelForMaskedLM if cfg.arch == 'encoder' else
          transformers.AutoModelForCausalLM)
  reference = auto.from_pretrained(folder, dtype=torch.float32)
  with torch.no_grad():
    out = reference.eval()(torch.tensor(tokens), output_hidden_states=True)
  # hidden_states: the embeddings, each block's output but the last, the last's through
  # the final norm (a decoder's) or as it is (an encoder's).
  return [h.numpy() for h in out.hidden_states] + [out.logits.numpy()]


def _names(cfg) -> list[str]:
  if options.ARCHITECTURES[cfg.arch].cross_attention:
    return [f'{stack} {name}' for stack, count in (('encoder', cfg.num_layers),
                                                    ('decoder', cfg.decoder_layers))
            for name in ('embeddings', *(f'layer {i}' for i in range(count - 1)),
                         f'layer {count - 1} + final norm')] + ['logits']
  layers = [f'layer {i}' for i in range(cfg.num_layers - 1)]
  last = f'layer {cfg.num_layers - 1}' + ' + final norm' * _has_final_norm(cfg)
  return ['embeddings', *layers, last, 'logits']


def compare(hf_dir, workdir=None, step: int | None = None, num_prompts: int = 3,
            length: int = 32, seed: int = 0) -> Report:
  """Both implementations on `num_prompts` random prompts of `length` tokens."""
  if num_prompts < 1 or length < 1:
    raise ValueError(f'num_prompts={num_prompts} and length={length} must be at least 1')
  imported, _ = hf.load_hf(hf_dir)
  model, source = imported, 'import of the folder'
  if workdir is not None:
    run = runs.RunFolder(workdir)
    mismatch = architecture_mismatch(run.model_cfg, imported.cfg)
    if mismatch:
      raise ConversionError(f'{workdir} and {hf_dir} hold different models:\n  ' +
                            '\n  '.join(mismatch))
    run.step_folder(step)
    model, source = _as_exported(run.model(step)), f'run {workdir}'
  length = min(length, model.cfg.max_len)
  tokens = np.random.default_rng(seed).integers(0, model.cfg.vocab_size, (num_prompts, length))
  ours = (_encoder_decoder_outputs if options.ARCHITECTURES[model.cfg.arch].cross_attention
          else _llmjax_outputs)(model, tokens)
  theirs = _transformers_outputs(hf_dir, tokens, model.cfg)
  if len(ours) != len(theirs):
    raise ConversionError(f'transformers reports {len(theirs) - 1} outputs, llmjax '
                          f'{len(ours) - 1}')
  diffs = [float(np.abs(a - b).max()) for a, b in zip(theirs, ours)]
  return Report(_names(model.cfg), diffs, source)
