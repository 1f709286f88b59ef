"""Hugging Face `config.json` <-> ModelConfig for the GPT-2 and Llama families.

Import refuses every HF feature llmjax's Transformer does not compute (scaled
rope, other activations, biases llmjax has no slot for), so an imported model
is the same function as the HF one. Export refuses llmjax configs that neither
HF family expresses, naming the fields.
"""

import dataclasses

from llmjax.model import options
from llmjax.model.config import ModelConfig

SUPPORTED = ('gpt2', 'llama')

# Class defaults of transformers' GPT2Config and LlamaConfig: config.json files
# written by `save_pretrained` may leave out fields that keep these values.
_GPT2_DEFAULTS = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                      n_inner=None, activation_function='gelu_new', layer_norm_epsilon=1e-5,
                      tie_word_embeddings=True, scale_attn_weights=True,
                      scale_attn_by_inverse_layer_idx=False, add_cross_attention=False)
_LLAMA_DEFAULTS = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=None,
                       head_dim=None, hidden_act='silu', max_position_embeddings=2048,
                       rms_norm_eps=1e-6, rope_theta=10_000.0, tie_word_embeddings=False,
                       attention_bias=False, mlp_bias=False)

# The fields a checkpoint's parameters and its function depend on. The others
# (dtypes, dropout, remat, scan, attention kernel, init scale) are a run's own.
ARCHITECTURE_FIELDS = ('vocab_size', 'd_model', 'num_layers', 'num_heads', 'num_kv_heads',
                       'head_dim', 'mlp_dim', 'norm', 'norm_eps', 'positions', 'rope_theta',
                       'mlp', 'tie_embeddings', 'use_bias', 'qk_norm', 'logits_soft_cap')


class ConversionError(ValueError):
  """A Hugging Face folder or an llmjax model that cannot be converted; says why."""


def config_from_hf(hf: dict, dtype: str = 'float32') -> ModelConfig:
  """The ModelConfig of a Hugging Face `config.json` (as a dict) of a gpt2 or llama model.

  Args:
    hf: the parsed config.json.
    dtype: parameter and compute dtype of the llmjax model (float32 or bfloat16).
  Returns:
    The ModelConfig; raises ConversionError for anything llmjax would compute differently.
  """
  kind = hf.get('model_type')
  if kind == 'gpt2':
    fields = _gpt2_fields({**_GPT2_DEFAULTS, **_not_null(hf)})
  elif kind == 'llama':
    fields = _llama_fields({**_LLAMA_DEFAULTS, **_not_null(hf)})
  else:
    raise ConversionError(f'unsupported model_type {kind!r}; supported: {", ".join(SUPPORTED)}')
  return ModelConfig(**fields, param_dtype=dtype, dtype=dtype)


def _not_null(hf: dict) -> dict:
  return {k: v for k, v in hf.items() if v is not None}


def _require(hf: dict, key: str, allowed: tuple, why: str) -> None:
  if hf[key] not in allowed:
    raise ConversionError(f'unsupported {hf["model_type"]} feature: {key}={hf[key]!r}; '
                          f'llmjax supports {" or ".join(map(repr, allowed))} ({why})')


def _mlp_kinds(gated: bool) -> tuple[str, ...]:
  return tuple(name for name, kind in options.MLPS.items() if kind.gated == gated)


def _mlp(hf: dict, key: str, gated: bool) -> str:
  """The llmjax MLP kind of the HF activation `hf[key]` (GPT-2's MLP is plain, Llama's gated)."""
  kind = options.mlp_for_hf(hf[key], gated)
  if kind is None:
    names = [a for name in _mlp_kinds(gated) for a in options.MLPS[name].hf_activations]
    _require(hf, key, tuple(names), f'the activations of llmjax\'s {"gated " * gated}MLPs')
  return kind


def _gpt2_fields(hf: dict) -> dict:
  mlp = _mlp(hf, 'activation_function', gated=False)
  for key in ('scale_attn_weights', 'scale_attn_by_inverse_layer_idx', 'add_cross_attention'):
    _require(hf, key, (_GPT2_DEFAULTS[key],), 'causal self-attention scaled by 1/sqrt(head dim)')
  d, n = hf['n_embd'], hf['n_head']
  if d % n:
    raise ConversionError(f'gpt2 config: n_embd={d} is not divisible by n_head={n}')
  return dict(vocab_size=hf['vocab_size'], d_model=d, num_layers=hf['n_layer'], num_heads=n,
              num_kv_heads=n, head_dim=d // n, mlp_dim=hf['n_inner'] or 4 * d,
              max_len=hf['n_positions'], norm='layernorm', norm_eps=hf['layer_norm_epsilon'],
              positions='learned', mlp=mlp, tie_embeddings=hf['tie_word_embeddings'],
              use_bias=True, dropout=0.0)


def _llama_fields(hf: dict) -> dict:
  mlp = _mlp(hf, 'hidden_act', gated=True)
  # llmjax's use_bias also puts biases on the MLP, and its SwiGLU has no gate bias.
  _require(hf, 'attention_bias', (False,), 'llama without projection biases')
  _require(hf, 'mlp_bias', (False,), 'llama without projection biases')
  # transformers 5 writes rope_parameters; older versions rope_theta and rope_scaling.
  rope = hf.get('rope_parameters') or hf.get('rope_scaling') or {}
  rope_type = rope.get('rope_type', rope.get('type', 'default'))
  if rope_type != 'default':
    raise ConversionError(f'unsupported llama feature: rope scaling {rope_type!r}; llmjax '
                          f'implements unscaled rope only (rope_type \'default\')')
  if rope.get('partial_rotary_factor', 1.0) != 1.0:
    raise ConversionError('unsupported llama feature: partial_rotary_factor='
                          f'{rope["partial_rotary_factor"]}; llmjax rotates the whole head')
  n = hf['num_attention_heads']
  return dict(vocab_size=hf['vocab_size'], d_model=hf['hidden_size'],
              num_layers=hf['num_hidden_layers'], num_heads=n,
              num_kv_heads=hf['num_key_value_heads'] or n,
              head_dim=hf['head_dim'] or hf['hidden_size'] // n,
              mlp_dim=hf['intermediate_size'], max_len=hf['max_position_embeddings'],
              norm='rmsnorm', norm_eps=hf['rms_norm_eps'], positions='rope',
              rope_theta=float(rope.get('rope_theta', hf['rope_theta'])), mlp=mlp,
              tie_embeddings=hf['tie_word_embeddings'], use_bias=False, dropout=0.0)


def family(cfg: ModelConfig) -> str:
  """The HF family an llmjax model is exported as: learned positions mean GPT-2."""
  return 'gpt2' if options.POSITIONS[cfg.positions].table else 'llama'


def _export_problems(cfg: ModelConfig) -> list[str]:
  if family(cfg) == 'gpt2':
    needed = dict(norm=('layernorm',), mlp=_mlp_kinds(gated=False), use_bias=(True,),
                  num_kv_heads=(cfg.num_heads,), head_dim=(cfg.d_model // cfg.num_heads,))
  else:
    needed = dict(norm=('rmsnorm',), mlp=_mlp_kinds(gated=True), use_bias=(False,))
  needed.update(qk_norm=(False,), logits_soft_cap=(0.0,))
  return [f'model.{k}={getattr(cfg, k)!r} (needs {" or ".join(map(repr, v))})'
          for k, v in needed.items() if getattr(cfg, k) not in v]


def config_to_hf(cfg: ModelConfig, dtype: str = 'float32',
                 eos_token_id: int | None = None) -> dict:
  """The Hugging Face config.json (a dict) of an llmjax model; ConversionError names the
  fields that neither GPT-2 nor Llama can express."""
  kind = family(cfg)
  problems = _export_problems(cfg)
  if problems:
    raise ConversionError(f'Hugging Face cannot express this model as {kind} (chosen by '
                          f'model.positions={cfg.positions!r}): {"; ".join(problems)}')
  activation = options.MLPS[cfg.mlp].hf_activations[0]
  common = dict(model_type=kind, vocab_size=cfg.vocab_size, tie_word_embeddings=cfg.tie_embeddings,
                bos_token_id=eos_token_id, eos_token_id=eos_token_id, torch_dtype=dtype)
  if kind == 'gpt2':
    return dict(architectures=['GPT2LMHeadModel'], **common, n_positions=cfg.max_len,
                n_embd=cfg.d_model, n_layer=cfg.num_layers, n_head=cfg.num_heads,
                n_inner=cfg.mlp_dim, activation_function=activation,
                layer_norm_epsilon=cfg.norm_eps, resid_pdrop=cfg.dropout,
                embd_pdrop=cfg.dropout, attn_pdrop=0.0)
  return dict(architectures=['LlamaForCausalLM'], **common, hidden_size=cfg.d_model,
              intermediate_size=cfg.mlp_dim, num_hidden_layers=cfg.num_layers,
              num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
              head_dim=cfg.head_dim, hidden_act=activation, max_position_embeddings=cfg.max_len,
              rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta,
              rope_parameters=dict(rope_type='default', rope_theta=cfg.rope_theta),
              attention_bias=False, mlp_bias=False, attention_dropout=0.0)


def architecture_mismatch(run: ModelConfig, imported: ModelConfig) -> list[str]:
  """'model.FIELD: run A, hf B' for each architecture field that differs.

  max_len counts only with learned positions, where it sizes a parameter.
  """
  table = options.POSITIONS[imported.positions].table
  fields = ARCHITECTURE_FIELDS + (('max_len',) if table else ())
  run_values, hf_values = dataclasses.asdict(run), dataclasses.asdict(imported)
  return [f'model.{f}: run {run_values[f]!r}, hf {hf_values[f]!r}' for f in fields
          if run_values[f] != hf_values[f]]
