"""Hugging Face `config.json` <-> ModelConfig for the GPT-2, Llama, Mistral, Qwen2, BERT and T5
families.

Each family is one `Family` entry of `FAMILIES`: its class, the class defaults of its
config, how its config.json reads into ModelConfig fields and is written back, and what it
can express. Llama, Mistral and Qwen2 share the rotary reader and writer; they differ in
a few table fields (Qwen2's q/k/v biases, the sliding window's keys). Import refuses
every HF feature llmjax's Transformer does not compute (other rope scalings and
activations, biases llmjax has no slot for, a sliding window shorter than the context),
so an imported model is the same function as the HF one. Export refuses llmjax configs
that the family does not express, naming the fields.
"""

import dataclasses
from collections.abc import Callable

from llmjax.model import options
from llmjax.model.config import ModelConfig


class ConversionError(ValueError):
  """A Hugging Face folder or an llmjax model that cannot be converted; says why."""


@dataclasses.dataclass(frozen=True)
class Family:
  """One Hugging Face model family (a `model_type`)."""
  architecture: str  # the transformers head class (*ForCausalLM, BertForMaskedLM)
  defaults: dict  # its config class's defaults: config.json files may leave these out
  read: Callable[[dict, 'Family'], dict]  # config.json (defaults filled) -> ModelConfig fields
  write: Callable[[ModelConfig, 'Family'], dict]  # ModelConfig -> the family's config keys
  needs: dict  # ModelConfig field -> the values this family can express
  fixed: dict  # HF keys that must have these values (export writes them)
  fixed_why: str  # what llmjax computes instead of another value of a fixed key
  written: dict = dataclasses.field(default_factory=dict)  # more keys export writes
  window: Callable[[dict], int | None] = lambda hf: None  # sliding window, when one applies
  full_heads: bool = False  # one kv head per query head, of width D/N
  kv_heads_are_heads: bool = False  # one kv head per query head, of any width (T5's d_kv)


_GPT2_DEFAULTS = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                      n_inner=None, activation_function='gelu_new', layer_norm_epsilon=1e-5,
                      tie_word_embeddings=True, scale_attn_weights=True,
                      scale_attn_by_inverse_layer_idx=False, add_cross_attention=False)
_LLAMA_DEFAULTS = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=None,
                       head_dim=None, hidden_act='silu', max_position_embeddings=2048,
                       rms_norm_eps=1e-6, rope_theta=10_000.0, tie_word_embeddings=False,
                       attention_bias=False, mlp_bias=False)
_MISTRAL_DEFAULTS = {**_LLAMA_DEFAULTS, 'intermediate_size': 14336, 'num_key_value_heads': 8,
                     'max_position_embeddings': 131072, 'sliding_window': 4096}
_BERT_DEFAULTS = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                      num_attention_heads=12, intermediate_size=3072, hidden_act='gelu',
                      max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12,
                      tie_word_embeddings=True, position_embedding_type='absolute',
                      is_decoder=False, add_cross_attention=False)
# transformers 5 writes T5's tie_word_embeddings as True always and says in
# scale_decoder_outputs whether the head reads the stream times d_model^-0.5 (v1.0, tied);
# older versions and released v1.1 / Flan-T5 folders say tie_word_embeddings=false.
_T5_DEFAULTS = dict(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6,
                    num_decoder_layers=None, num_heads=8, relative_attention_num_buckets=32,
                    relative_attention_max_distance=128, layer_norm_epsilon=1e-6,
                    feed_forward_proj='relu', tie_word_embeddings=True, is_encoder_decoder=True,
                    is_decoder=False)
_QWEN2_DEFAULTS = {**_LLAMA_DEFAULTS, 'vocab_size': 151936, 'intermediate_size': 22016,
                   'max_position_embeddings': 32768, 'use_sliding_window': False,
                   'sliding_window': 4096, 'max_window_layers': 28}

# The fields a checkpoint's parameters and its function depend on. The others
# (dtypes, dropout, remat, scan, attention kernel, init scale) are a run's own.
ARCHITECTURE_FIELDS = ('vocab_size', 'd_model', 'num_layers', 'num_heads', 'num_kv_heads',
                       'head_dim', 'mlp_dim', 'norm', 'norm_eps', 'positions', 'rope_theta',
                       'rope_scaling', 'rope_scaling_factor', 'rope_low_freq_factor',
                       'rope_high_freq_factor', 'rope_original_max_len', 'mlp',
                       'tie_embeddings', 'use_bias', 'qkv_bias', 'qk_norm', 'logits_soft_cap',
                       'arch', 'norm_position', 'embed_norm', 'num_decoder_layers',
                       'relative_buckets', 'relative_max_distance', 'scale_scores')
# What no family computes: checked on every export. The decoder layout unless a family
# says otherwise (BERT's `needs`).
_NEEDED_BY_ALL = dict(qk_norm=(False,), logits_soft_cap=(0.0,), arch=('decoder',),
                      norm_position=('pre',), embed_norm=(False,), scale_scores=(True,))


def _mlp_kinds(gated: bool) -> tuple[str, ...]:
  return tuple(name for name, kind in options.MLPS.items() if kind.gated == gated)


def _require(hf: dict, key: str, allowed: tuple, why: str) -> None:
  if hf[key] not in allowed:
    raise ConversionError(f'unsupported {hf["model_type"]} feature: {key}={hf[key]!r}; '
                          f'llmjax supports {" or ".join(map(repr, allowed))} ({why})')


def _mlp(hf: dict, key: str, gated: bool) -> str:
  """The llmjax MLP kind of the HF activation `hf[key]` (GPT-2's MLP is plain, Llama's gated)."""
  kind = options.mlp_for_hf(hf[key], gated)
  if kind is None:
    names = [a for name in _mlp_kinds(gated) for a in options.MLPS[name].hf_activations]
    _require(hf, key, tuple(names), f'the activations of llmjax\'s {"gated " * gated}MLPs')
  return kind


def _check_fixed(hf: dict, fam: Family) -> None:
  for key, value in fam.fixed.items():
    _require(hf, key, (value,), fam.fixed_why)


def _gpt2_fields(hf: dict, fam: Family) -> dict:
  mlp = _mlp(hf, 'activation_function', gated=False)
  _check_fixed(hf, fam)
  d, n = hf['n_embd'], hf['n_head']
  if d % n:
    raise ConversionError(f'gpt2 config: n_embd={d} is not divisible by n_head={n}')
  return dict(vocab_size=hf['vocab_size'], d_model=d, num_layers=hf['n_layer'], num_heads=n,
              num_kv_heads=n, head_dim=d // n, mlp_dim=hf['n_inner'] or 4 * d,
              max_len=hf['n_positions'], norm='layernorm', norm_eps=hf['layer_norm_epsilon'],
              positions='learned', mlp=mlp, tie_embeddings=hf['tie_word_embeddings'],
              use_bias=True)


def _gpt2_config(cfg: ModelConfig, fam: Family) -> dict:
  return dict(n_positions=cfg.max_len, n_embd=cfg.d_model, n_layer=cfg.num_layers,
              n_head=cfg.num_heads, n_inner=cfg.mlp_dim,
              activation_function=options.MLPS[cfg.mlp].hf_activations[0],
              layer_norm_epsilon=cfg.norm_eps, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
              attn_pdrop=0.0)


def _bert_fields(hf: dict, fam: Family) -> dict:
  mlp = _mlp(hf, 'hidden_act', gated=False)
  _check_fixed(hf, fam)
  d, n = hf['hidden_size'], hf['num_attention_heads']
  if d % n:
    raise ConversionError(f'bert config: hidden_size={d} is not divisible by '
                          f'num_attention_heads={n}')
  return dict(vocab_size=hf['vocab_size'], d_model=d, num_layers=hf['num_hidden_layers'],
              num_heads=n, num_kv_heads=n, head_dim=d // n, mlp_dim=hf['intermediate_size'],
              max_len=hf['max_position_embeddings'], norm='layernorm',
              norm_eps=hf['layer_norm_eps'], positions='learned', mlp=mlp,
              tie_embeddings=hf['tie_word_embeddings'], use_bias=True, arch='encoder',
              norm_position='post', embed_norm=True)


def _bert_config(cfg: ModelConfig, fam: Family) -> dict:
  return dict(hidden_size=cfg.d_model, num_hidden_layers=cfg.num_layers,
              num_attention_heads=cfg.num_heads, intermediate_size=cfg.mlp_dim,
              hidden_act=options.MLPS[cfg.mlp].hf_activations[0],
              max_position_embeddings=cfg.max_len, layer_norm_eps=cfg.norm_eps,
              hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=0.0)


def _t5_activation(hf: dict) -> tuple[str, bool]:
  """(the HF activation, gated) of T5's feed_forward_proj: 'relu', 'gated-gelu', ... (its
  'gated-gelu' is the tanh GELU, gelu_new)."""
  proj = hf['feed_forward_proj']
  gated = proj.startswith('gated-')
  return ('gelu_new' if proj == 'gated-gelu' else proj.split('-')[-1]), gated


def _t5_fields(hf: dict, fam: Family) -> dict:
  activation, gated = _t5_activation(hf)
  mlp = options.mlp_for_hf(activation, gated)
  if mlp is None:
    known = [('gated-' if k.gated else '') + k.hf_activations[0] for k in options.MLPS.values()]
    _require(hf, 'feed_forward_proj', tuple(known), "the activations of llmjax's MLPs")
  _check_fixed(hf, fam)
  tied = bool(hf.get('scale_decoder_outputs', hf['tie_word_embeddings']))
  decoder_layers = hf['num_decoder_layers'] or hf['num_layers']
  return dict(vocab_size=hf['vocab_size'], d_model=hf['d_model'], num_layers=hf['num_layers'],
              num_decoder_layers=0 if decoder_layers == hf['num_layers'] else decoder_layers,
              num_heads=hf['num_heads'], num_kv_heads=hf['num_heads'], head_dim=hf['d_kv'],
              mlp_dim=hf['d_ff'], max_len=512, norm='rmsnorm', norm_eps=hf['layer_norm_epsilon'],
              positions='relative', relative_buckets=hf['relative_attention_num_buckets'],
              relative_max_distance=hf['relative_attention_max_distance'], mlp=mlp,
              tie_embeddings=tied, use_bias=False, arch='encoder_decoder', scale_scores=False)


def _t5_config(cfg: ModelConfig, fam: Family) -> dict:
  kind = options.MLPS[cfg.mlp]
  activation = kind.hf_activations[0]
  proj = ('gated-' + ('gelu' if 'gelu_new' in kind.hf_activations else activation)
          if kind.gated else activation)
  return dict(d_model=cfg.d_model, d_kv=cfg.head_dim, d_ff=cfg.mlp_dim,
              num_layers=cfg.num_layers, num_decoder_layers=cfg.decoder_layers,
              num_heads=cfg.num_heads, relative_attention_num_buckets=cfg.relative_buckets,
              relative_attention_max_distance=cfg.relative_max_distance,
              layer_norm_epsilon=cfg.norm_eps, feed_forward_proj=proj,
              scale_decoder_outputs=cfg.tie_embeddings, dropout_rate=cfg.dropout,
              decoder_start_token_id=0, pad_token_id=0)


# Hugging Face's llama3 rope keys -> ModelConfig fields.
_LLAMA3_ROPE = dict(factor='rope_scaling_factor', low_freq_factor='rope_low_freq_factor',
                    high_freq_factor='rope_high_freq_factor',
                    original_max_position_embeddings='rope_original_max_len')


def _rope_fields(hf: dict) -> dict:
  """rope_theta and the rope scaling fields of a rotary family's config.json."""
  # transformers 5 writes rope_parameters; older versions rope_theta and rope_scaling.
  rope = hf.get('rope_parameters') or hf.get('rope_scaling') or {}
  rope_type = rope.get('rope_type', rope.get('type', 'default'))
  scaling = options.rope_scaling_for_hf(rope_type)
  if scaling is None:
    known = ', '.join(repr(k.hf_rope_type) for k in options.ROPE_SCALINGS.values())
    raise ConversionError(f'unsupported {hf["model_type"]} feature: rope scaling {rope_type!r}; '
                          f'llmjax implements rope_type {known}')
  if rope.get('partial_rotary_factor', 1.0) != 1.0:
    raise ConversionError(f'unsupported {hf["model_type"]} feature: partial_rotary_factor='
                          f'{rope["partial_rotary_factor"]}; llmjax rotates the whole head')
  fields = dict(rope_theta=float(rope.get('rope_theta', hf['rope_theta'])), rope_scaling=scaling)
  if scaling == 'llama3':
    missing = [k for k in _LLAMA3_ROPE if rope.get(k) is None]
    if missing:
      raise ConversionError(f'{hf["model_type"]} config: llama3 rope scaling without '
                            f'{", ".join(missing)}')
    fields.update({field: type(getattr(ModelConfig, field))(rope[k])
                   for k, field in _LLAMA3_ROPE.items()})
  return fields


def _rotary_fields(hf: dict, fam: Family) -> dict:
  mlp = _mlp(hf, 'hidden_act', gated=True)
  _check_fixed(hf, fam)
  window, n = fam.window(hf), hf['num_attention_heads']
  if window is not None and window < hf['max_position_embeddings']:
    raise ConversionError(
        f'unsupported {hf["model_type"]} feature: sliding_window={window} is shorter than '
        f'max_position_embeddings={hf["max_position_embeddings"]}; llmjax attends over the '
        f'whole context, so it would compute another function past {window} tokens')
  return dict(vocab_size=hf['vocab_size'], d_model=hf['hidden_size'],
              num_layers=hf['num_hidden_layers'], num_heads=n,
              num_kv_heads=hf['num_key_value_heads'] or n,
              head_dim=hf['head_dim'] or hf['hidden_size'] // n,
              mlp_dim=hf['intermediate_size'], max_len=hf['max_position_embeddings'],
              norm='rmsnorm', norm_eps=hf['rms_norm_eps'], positions='rope', mlp=mlp,
              tie_embeddings=hf['tie_word_embeddings'], use_bias=False,
              qkv_bias=fam.needs['qkv_bias'] == (True,), **_rope_fields(hf))


def _rope_config(cfg: ModelConfig) -> dict:
  kind = options.ROPE_SCALINGS[cfg.rope_scaling].hf_rope_type
  rope = dict(rope_type=kind, rope_theta=cfg.rope_theta)
  if cfg.rope_scaling == 'llama3':
    rope.update({k: getattr(cfg, field) for k, field in _LLAMA3_ROPE.items()})
  # rope_parameters for transformers 5, rope_theta and rope_scaling for older versions.
  return dict(rope_theta=cfg.rope_theta, rope_parameters=rope,
              rope_scaling=None if kind == 'default' else rope)


def _rotary_config(cfg: ModelConfig, fam: Family) -> dict:
  return dict(hidden_size=cfg.d_model, intermediate_size=cfg.mlp_dim,
              num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
              num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
              hidden_act=options.MLPS[cfg.mlp].hf_activations[0],
              max_position_embeddings=cfg.max_len, rms_norm_eps=cfg.norm_eps,
              attention_dropout=0.0, **_rope_config(cfg))


def _qwen2_window(hf: dict) -> int | None:
  """Qwen2's window, when some layer slides (layer_types, else the layers from
  max_window_layers on when use_sliding_window)."""
  if 'layer_types' in hf:
    slides = 'sliding_attention' in hf['layer_types']
  else:
    slides = hf['use_sliding_window'] and hf['max_window_layers'] < hf['num_hidden_layers']
  return hf.get('sliding_window') if slides else None


_ROTARY = dict(norm=('rmsnorm',), mlp=_mlp_kinds(gated=True), use_bias=(False,),
               positions=('rope',))
FAMILIES: dict[str, Family] = {
    'gpt2': Family('GPT2LMHeadModel', _GPT2_DEFAULTS, _gpt2_fields, _gpt2_config,
                   needs=dict(positions=('learned',), norm=('layernorm',),
                              mlp=_mlp_kinds(gated=False), use_bias=(True,)),
                   fixed=dict(scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False,
                              add_cross_attention=False),
                   fixed_why='causal self-attention scaled by 1/sqrt(head dim)',
                   full_heads=True),
    'llama': Family('LlamaForCausalLM', _LLAMA_DEFAULTS, _rotary_fields, _rotary_config,
                    needs=dict(**_ROTARY, qkv_bias=(False,)),
                    fixed=dict(attention_bias=False, mlp_bias=False),
                    fixed_why='llama without projection biases'),
    'mistral': Family('MistralForCausalLM', _MISTRAL_DEFAULTS, _rotary_fields, _rotary_config,
                      needs=dict(**_ROTARY, qkv_bias=(False,)), fixed={}, fixed_why='',
                      written=dict(sliding_window=None),
                      window=lambda hf: hf.get('sliding_window')),
    'qwen2': Family('Qwen2ForCausalLM', _QWEN2_DEFAULTS, _rotary_fields, _rotary_config,
                    needs=dict(**_ROTARY, qkv_bias=(True,)), fixed={}, fixed_why='',
                    written=dict(use_sliding_window=False, sliding_window=None),
                    window=_qwen2_window),
    'bert': Family('BertForMaskedLM', _BERT_DEFAULTS, _bert_fields, _bert_config,
                   needs=dict(arch=('encoder',), norm_position=('post',), embed_norm=(True,),
                              positions=('learned',), norm=('layernorm',),
                              mlp=_mlp_kinds(gated=False), use_bias=(True,)),
                   fixed=dict(type_vocab_size=2, position_embedding_type='absolute',
                              is_decoder=False, add_cross_attention=False),
                   fixed_why='an encoder with absolute positions and token types 0 and 1, '
                             'of which llmjax feeds 0',
                   full_heads=True),
    't5': Family('T5ForConditionalGeneration', _T5_DEFAULTS, _t5_fields, _t5_config,
                 needs=dict(arch=('encoder_decoder',), positions=('relative',),
                            norm=('rmsnorm',), use_bias=(False,), qkv_bias=(False,),
                            scale_scores=(False,)),
                 fixed=dict(is_encoder_decoder=True, is_decoder=False),
                 fixed_why='an encoder and a decoder stack', kv_heads_are_heads=True),
}
SUPPORTED = tuple(FAMILIES)


def config_from_hf(hf: dict, dtype: str = 'float32') -> ModelConfig:
  """The ModelConfig of a Hugging Face `config.json` (as a dict) of a supported family.

  Args:
    hf: the parsed config.json.
    dtype: parameter and compute dtype of the llmjax model (float32 or bfloat16).
  Returns:
    The ModelConfig; raises ConversionError for anything llmjax would compute differently.
  """
  kind = hf.get('model_type')
  if kind not in FAMILIES:
    raise ConversionError(f'unsupported model_type {kind!r}; supported: {", ".join(SUPPORTED)}')
  fam = FAMILIES[kind]
  fields = fam.read({**fam.defaults, **_given(hf)}, fam)
  return ModelConfig(**fields, dropout=0.0, param_dtype=dtype, dtype=dtype)


# Keys whose null means something (no window), not 'the class default'.
_NULL_MEANS_NONE = ('sliding_window',)


def _given(hf: dict) -> dict:
  return {k: v for k, v in hf.items() if v is not None or k in _NULL_MEANS_NONE}


def family(cfg: ModelConfig) -> str:
  """The HF family an llmjax model is exported as by default: an encoder means BERT, an
  encoder-decoder T5, learned positions GPT-2, q/k/v biases Qwen2, otherwise Llama."""
  if cfg.arch == 'encoder':
    return 'bert'
  if options.ARCHITECTURES[cfg.arch].cross_attention:
    return 't5'
  if options.POSITIONS[cfg.positions].table:
    return 'gpt2'
  return 'qwen2' if cfg.qkv_bias else 'llama'


def export_problems(cfg: ModelConfig, kind: str) -> list[str]:
  """'model.FIELD=VALUE (needs ...)' for each field family `kind` cannot express."""
  fam = FAMILIES[kind]
  needed = {**_NEEDED_BY_ALL, **fam.needs}
  if fam.full_heads:
    needed.update(num_kv_heads=(cfg.num_heads,), head_dim=(cfg.d_model // cfg.num_heads,))
  if fam.kv_heads_are_heads:
    needed.update(num_kv_heads=(cfg.num_heads,))
  return [f'model.{k}={getattr(cfg, k)!r} (needs {" or ".join(map(repr, v))})'
          for k, v in needed.items() if getattr(cfg, k) not in v]


def config_to_hf(cfg: ModelConfig, dtype: str = 'float32', eos_token_id: int | None = None,
                 kind: str | None = None) -> dict:
  """The Hugging Face config.json (a dict) of an llmjax model as family `kind` (default:
  `family(cfg)`); ConversionError names the fields that family cannot express."""
  chosen = kind or family(cfg)
  if chosen not in FAMILIES:
    raise ConversionError(f'unknown Hugging Face family {chosen!r}; choose one of '
                          f'{", ".join(SUPPORTED)}')
  problems = export_problems(cfg, chosen)
  if problems:
    how = 'chosen' if kind else f'chosen by model.arch and model.positions'
    raise ConversionError(f'Hugging Face cannot express this model as {chosen} ({how}): '
                          f'{"; ".join(problems)}')
  fam = FAMILIES[chosen]
  return dict(architectures=[fam.architecture], model_type=chosen, vocab_size=cfg.vocab_size,
              tie_word_embeddings=cfg.tie_embeddings, bos_token_id=eos_token_id,
              eos_token_id=eos_token_id, torch_dtype=dtype, dtype=dtype, **fam.fixed,
              **fam.written, **fam.write(cfg, fam))


def architecture_mismatch(run: ModelConfig, imported: ModelConfig) -> list[str]:
  """'model.FIELD: run A, hf B' for each architecture field that differs.

  max_len counts only with learned positions, where it sizes a parameter;
  num_decoder_layers compares the decoder stacks' depths.
  """
  table = options.POSITIONS[imported.positions].table
  fields = ARCHITECTURE_FIELDS + (('max_len',) if table else ())
  run_values, hf_values = dataclasses.asdict(run), dataclasses.asdict(imported)
  # The decoder's depth, however it is written (0 means as deep as the encoder).
  run_values['num_decoder_layers'] = run.decoder_layers
  hf_values['num_decoder_layers'] = imported.decoder_layers
  return [f'model.{f}: run {run_values[f]!r}, hf {hf_values[f]!r}' for f in fields
          if run_values[f] != hf_values[f]]
