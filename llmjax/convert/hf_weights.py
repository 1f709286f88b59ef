"""The tensor map between Hugging Face checkpoints and llmjax parameters.

Four layouts cover every family: GPT-2's, the rotary families' (Llama, Mistral, Qwen2:
the same names, Qwen2 adding q/k/v biases), BERT's (BertForMaskedLM) and T5's
(T5ForConditionalGeneration: `encoder.block.{i}` and `decoder.block.{i}`, whose counts
differ; each stack's relative-bias table lives in its block 0). One table per
layout lists every HF tensor: its name, its HF shape, the llmjax parameters it holds and
the reshapes between the two layouts. Import and export
both read the table, so they cannot disagree. Names with '{i}' exist once per
layer; llmjax stacks them on its leading layers axis.

Layouts: GPT-2's Conv1D weights are stored (in, out) and `c_attn` packs q, k, v
along its output; Llama's nn.Linear weights are (out, in). Heads are the major
part of a projection's head axis in both, as in llmjax's (D, N, H). HF Llama
checkpoints already use the half-split rotary layout (rotate_half) that
llmjax's rope uses, so q and k need no permutation. BERT's token-type table has no llmjax
counterpart: llmjax gives every token type 0, so import adds row 0 to the position table
(the same function for type-0 inputs, which is all llmjax feeds) and export writes rows of
zeros beside the summed table; a round trip from llmjax is exact.
"""

import dataclasses
import re
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from llmjax.convert.hf_config import ConversionError
from llmjax.model import options
from llmjax.model import parametrization as pz
from llmjax.model.config import ModelConfig

Path = tuple[str, ...]  # keys of one parameter in llmjax's nested parameter dict

# What some HF checkpoints carry that the model's function does not use: GPT-2's causal
# mask (attn.bias, attn.masked_bias), old Llama rotary frequencies, BERT's position-id buffer,
# BERT pretraining's next-sentence pooler and head, and the copies of T5's shared embedding
# that older transformers wrote for each stack (tied to it in every T5 model).
IGNORED = re.compile(r'(\.attn\.bias|\.attn\.masked_bias|rotary_emb\.inv_freq|'
                     r'embeddings\.position_ids)$|^(bert\.pooler\.|cls\.seq_relationship\.)|'
                     r'^(encoder|decoder)\.embed_tokens\.weight$')
# The base model's prefix inside the family's head class (*ForCausalLM, BertForMaskedLM).
_PREFIX = {'gpt2': 'transformer.', 'rotary': 'model.', 'bert': 'bert.', 't5': ''}
LM_HEAD = 'lm_head.weight'
BERT_HEAD = 'cls.predictions.'  # BERT's masked-LM head, outside its base model
TOKEN_TYPES = 'bert.embeddings.token_type_embeddings.weight'
TOKEN_TYPE_COUNT = 2  # BERT's type_vocab_size (hf_config refuses others)
# Tensors stored under either name (import reads the first when both are there; export
# writes both): BERT's output bias is the decoder's, which tied checkpoints leave out
# in favour of the head's copy.
ALIASES = {BERT_HEAD + 'decoder.bias': BERT_HEAD + 'bias'}


@dataclasses.dataclass(frozen=True)
class Tensor:
  name: str  # HF name; '{i}' stands for the layer index
  shape: tuple[int, ...]  # HF shape (of one layer)
  paths: tuple[Path, ...]  # the llmjax parameters it holds
  to_llmjax: Callable[[np.ndarray], tuple[np.ndarray, ...]]  # HF array -> one per path
  to_hf: Callable[..., np.ndarray]  # one array per path -> HF array
  adds: bool = False  # import adds its arrays to what an earlier tensor set at its paths


def _copy(name: str, shape: tuple[int, ...], path: Path) -> Tensor:
  return Tensor(name, shape, (path,), lambda w: (w,), lambda w: w)


def _transposed(name: str, shape: tuple[int, ...], path: Path) -> Tensor:
  return Tensor(name, shape, (path,), lambda w: (w.T,), lambda w: w.T)


def head_name(cfg: ModelConfig) -> str:
  """The HF name of the output head's weight (absent from tied checkpoints)."""
  return BERT_HEAD + 'decoder.weight' if layout(cfg) == 'bert' else LM_HEAD


def _unembed(cfg: ModelConfig) -> list[Tensor]:
  if cfg.tie_embeddings:
    return []
  return [_transposed(head_name(cfg), (cfg.vocab_size, cfg.d_model), ('unembed',))]


def _gpt2(cfg: ModelConfig) -> list[Tensor]:
  d, n, h, f, v = cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.mlp_dim, cfg.vocab_size
  block = 'transformer.h.{i}.'
  qkv = tuple(('blocks', 'attn', w) for w in ('wq', 'wk', 'wv'))
  qkv_bias = tuple(('blocks', 'attn', b) for b in ('bq', 'bk', 'bv'))
  tensors = [_copy('transformer.wte.weight', (v, d), ('embed', 'embedding')),
             _copy('transformer.wpe.weight', (cfg.max_len, d), ('pos_embedding',))]
  for hf_norm, norm in (('ln_1', 'attn_norm'), ('ln_2', 'mlp_norm')):
    tensors += [_copy(f'{block}{hf_norm}.weight', (d,), ('blocks', norm, 'scale')),
                _copy(f'{block}{hf_norm}.bias', (d,), ('blocks', norm, 'bias'))]
  tensors += [
      Tensor(f'{block}attn.c_attn.weight', (d, 3 * n * h), qkv,
             lambda w: tuple(w.reshape(d, 3, n, h).swapaxes(0, 1)),
             lambda *ws: np.concatenate([w.reshape(d, n * h) for w in ws], axis=1)),
      Tensor(f'{block}attn.c_attn.bias', (3 * n * h,), qkv_bias,
             lambda b: tuple(b.reshape(3, n, h)),
             lambda *bs: np.concatenate([b.reshape(n * h) for b in bs])),
      Tensor(f'{block}attn.c_proj.weight', (n * h, d), (('blocks', 'attn', 'wo'),),
             lambda w: (w.reshape(n, h, d),), lambda w: w.reshape(n * h, d)),
      _copy(f'{block}attn.c_proj.bias', (d,), ('blocks', 'attn', 'bo')),
      _copy(f'{block}mlp.c_fc.weight', (d, f), ('blocks', 'mlp', 'w_in')),
      _copy(f'{block}mlp.c_fc.bias', (f,), ('blocks', 'mlp', 'b_in')),
      _copy(f'{block}mlp.c_proj.weight', (f, d), ('blocks', 'mlp', 'w_out')),
      _copy(f'{block}mlp.c_proj.bias', (d,), ('blocks', 'mlp', 'b_out')),
      _copy('transformer.ln_f.weight', (d,), ('final_norm', 'scale')),
      _copy('transformer.ln_f.bias', (d,), ('final_norm', 'bias')),
  ]
  return tensors + _unembed(cfg)


def _heads_in(name: str, heads: int, h: int, d: int, path: Path) -> Tensor:
  """An (heads*H, D) nn.Linear weight <-> llmjax's (D, heads, H)."""
  return Tensor(name, (heads * h, d), (path,),
                lambda w: (w.reshape(heads, h, d).transpose(2, 0, 1),),
                lambda w: w.transpose(1, 2, 0).reshape(heads * h, d))


def _qkv_biases(cfg: ModelConfig, block: str) -> list[Tensor]:
  if not cfg.qkv_bias:
    return []
  n, k, h = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  return [Tensor(f'{block}self_attn.{name}_proj.bias', (heads * h,), (('blocks', 'attn', bias),),
                 lambda b, heads=heads: (b.reshape(heads, h),), lambda b: b.reshape(-1))
          for name, heads, bias in (('q', n, 'bq'), ('k', k, 'bk'), ('v', k, 'bv'))]


def _rotary(cfg: ModelConfig) -> list[Tensor]:
  d, n, k, h, f = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
  block = 'model.layers.{i}.'
  return _qkv_biases(cfg, block) + [
      _copy('model.embed_tokens.weight', (cfg.vocab_size, d), ('embed', 'embedding')),
      _copy(f'{block}input_layernorm.weight', (d,), ('blocks', 'attn_norm', 'scale')),
      _heads_in(f'{block}self_attn.q_proj.weight', n, h, d, ('blocks', 'attn', 'wq')),
      _heads_in(f'{block}self_attn.k_proj.weight', k, h, d, ('blocks', 'attn', 'wk')),
      _heads_in(f'{block}self_attn.v_proj.weight', k, h, d, ('blocks', 'attn', 'wv')),
      Tensor(f'{block}self_attn.o_proj.weight', (d, n * h), (('blocks', 'attn', 'wo'),),
             lambda w: (w.reshape(d, n, h).transpose(1, 2, 0),),
             lambda w: w.transpose(2, 0, 1).reshape(d, n * h)),
      _copy(f'{block}post_attention_layernorm.weight', (d,), ('blocks', 'mlp_norm', 'scale')),
      _transposed(f'{block}mlp.gate_proj.weight', (f, d), ('blocks', 'mlp', 'w_gate')),
      _transposed(f'{block}mlp.up_proj.weight', (f, d), ('blocks', 'mlp', 'w_in')),
      _transposed(f'{block}mlp.down_proj.weight', (d, f), ('blocks', 'mlp', 'w_out')),
      _copy('model.norm.weight', (d,), ('final_norm', 'scale')),
  ] + _unembed(cfg)


def _bert_norm(name: str, d: int, path: Path) -> list[Tensor]:
  return [_copy(f'{name}.weight', (d,), (*path, 'scale')),
          _copy(f'{name}.bias', (d,), (*path, 'bias'))]


def _bert_block(cfg: ModelConfig) -> list[Tensor]:
  d, n, h, f = cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.mlp_dim
  block, attn = 'bert.encoder.layer.{i}.', ('blocks', 'attn')
  tensors = []
  for hf_name, weight, bias in (('query', 'wq', 'bq'), ('key', 'wk', 'bk'),
                                ('value', 'wv', 'bv')):
    tensors += [_heads_in(f'{block}attention.self.{hf_name}.weight', n, h, d, (*attn, weight)),
                Tensor(f'{block}attention.self.{hf_name}.bias', (n * h,), ((*attn, bias),),
                       lambda b: (b.reshape(n, h),), lambda b: b.reshape(-1))]
  return tensors + [
      Tensor(f'{block}attention.output.dense.weight', (d, n * h), ((*attn, 'wo'),),
             lambda w: (w.reshape(d, n, h).transpose(1, 2, 0),),
             lambda w: w.transpose(2, 0, 1).reshape(d, n * h)),
      _copy(f'{block}attention.output.dense.bias', (d,), (*attn, 'bo')),
      *_bert_norm(f'{block}attention.output.LayerNorm', d, ('blocks', 'attn_norm')),
      _transposed(f'{block}intermediate.dense.weight', (f, d), ('blocks', 'mlp', 'w_in')),
      _copy(f'{block}intermediate.dense.bias', (f,), ('blocks', 'mlp', 'b_in')),
      _transposed(f'{block}output.dense.weight', (d, f), ('blocks', 'mlp', 'w_out')),
      _copy(f'{block}output.dense.bias', (d,), ('blocks', 'mlp', 'b_out')),
      *_bert_norm(f'{block}output.LayerNorm', d, ('blocks', 'mlp_norm')),
  ]


def _bert(cfg: ModelConfig) -> list[Tensor]:
  d, head = cfg.d_model, BERT_HEAD
  types = (TOKEN_TYPE_COUNT, d)
  return [
      _copy('bert.embeddings.word_embeddings.weight', (cfg.vocab_size, d), ('embed', 'embedding')),
      _copy('bert.embeddings.position_embeddings.weight', (cfg.max_len, d), ('pos_embedding',)),
      Tensor(TOKEN_TYPES, types, (('pos_embedding',),), lambda w: (w[0],),
             lambda _: np.zeros(types, np.float32), adds=True),
      *_bert_norm('bert.embeddings.LayerNorm', d, ('embed_norm',)),
      *_bert_block(cfg),
      _transposed(f'{head}transform.dense.weight', (d, d), ('mlm_head', 'w')),
      _copy(f'{head}transform.dense.bias', (d,), ('mlm_head', 'b')),
      *_bert_norm(f'{head}transform.LayerNorm', d, ('mlm_head', 'norm')),
      _copy(f'{head}decoder.bias', (cfg.vocab_size,), ('mlm_head', 'bias')),
  ] + _unembed(cfg)


def _t5_attention(cfg: ModelConfig, hf: str, stack: str, name: str) -> list[Tensor]:
  """T5's q, k, v (N*H, D) and o (D, N*H), bias-free and unscaled, <-> one llmjax attention."""
  d, n, h = cfg.d_model, cfg.num_heads, cfg.head_dim
  return [*(_heads_in(f'{hf}.{w}.weight', n, h, d, (stack, name, f'w{w}')) for w in 'qkv'),
          Tensor(f'{hf}.o.weight', (d, n * h), ((stack, name, 'wo'),),
                 lambda w: (w.reshape(d, n, h).transpose(1, 2, 0),),
                 lambda w: w.transpose(2, 0, 1).reshape(d, n * h))]


def _t5_mlp(cfg: ModelConfig, hf: str, stack: str) -> list[Tensor]:
  """T5's DenseReluDense: wi (plain), or wi_0 (through the activation) and wi_1 (gated)."""
  d, f = cfg.d_model, cfg.mlp_dim
  inputs = ([('wi_0', 'w_gate'), ('wi_1', 'w_in')] if options.MLPS[cfg.mlp].gated
            else [('wi', 'w_in')])
  return [*(_transposed(f'{hf}.{w}.weight', (f, d), (stack, 'mlp', ours)) for w, ours in inputs),
          _transposed(f'{hf}.wo.weight', (d, f), (stack, 'mlp', 'w_out'))]


def _t5(cfg: ModelConfig) -> list[Tensor]:
  d, buckets = cfg.d_model, (cfg.relative_buckets, cfg.num_heads)
  enc, dec = 'encoder.block.{i}.layer', 'decoder.block.{i}.layer'
  bias = 'block.0.layer.0.SelfAttention.relative_attention_bias.weight'
  return [
      _copy('shared.weight', (cfg.vocab_size, d), ('embed', 'embedding')),
      _copy(f'encoder.{bias}', buckets, ('encoder_relative_bias', 'table')),
      _copy(f'{enc}.0.layer_norm.weight', (d,), ('encoder_blocks', 'attn_norm', 'scale')),
      *_t5_attention(cfg, f'{enc}.0.SelfAttention', 'encoder_blocks', 'attn'),
      _copy(f'{enc}.1.layer_norm.weight', (d,), ('encoder_blocks', 'mlp_norm', 'scale')),
      *_t5_mlp(cfg, f'{enc}.1.DenseReluDense', 'encoder_blocks'),
      _copy('encoder.final_layer_norm.weight', (d,), ('encoder_norm', 'scale')),
      _copy(f'decoder.{bias}', buckets, ('relative_bias', 'table')),
      _copy(f'{dec}.0.layer_norm.weight', (d,), ('blocks', 'attn_norm', 'scale')),
      *_t5_attention(cfg, f'{dec}.0.SelfAttention', 'blocks', 'attn'),
      _copy(f'{dec}.1.layer_norm.weight', (d,), ('blocks', 'cross_norm', 'scale')),
      *_t5_attention(cfg, f'{dec}.1.EncDecAttention', 'blocks', 'cross_attn'),
      _copy(f'{dec}.2.layer_norm.weight', (d,), ('blocks', 'mlp_norm', 'scale')),
      *_t5_mlp(cfg, f'{dec}.2.DenseReluDense', 'blocks'),
      _copy('decoder.final_layer_norm.weight', (d,), ('final_norm', 'scale')),
  ] + _unembed(cfg)


def layout(cfg: ModelConfig) -> str:
  """'bert' (encoders), 't5' (encoder-decoders), 'gpt2' (learned positions) or 'rotary'
  (Llama, Mistral, Qwen2)."""
  if cfg.arch == 'encoder':
    return 'bert'
  if options.ARCHITECTURES[cfg.arch].cross_attention:
    return 't5'
  return 'gpt2' if options.POSITIONS[cfg.positions].table else 'rotary'


def tensors(cfg: ModelConfig) -> list[Tensor]:
  """The HF tensors of a model of `cfg`, with their llmjax counterparts."""
  return {'gpt2': _gpt2, 'rotary': _rotary, 'bert': _bert, 't5': _t5}[layout(cfg)](cfg)


def _names(tensor: Tensor, cfg: ModelConfig) -> list[str]:
  if '{i}' not in tensor.name:
    return [tensor.name]
  # An encoder-decoder's encoder has num_layers blocks, its decoder (`blocks`) its own count.
  count = cfg.num_layers if tensor.paths[0][0] == 'encoder_blocks' else cfg.decoder_layers
  return [tensor.name.format(i=i) for i in range(count)]


def hf_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
  """Every HF tensor name of a model of `cfg` (each layer's), with its shape."""
  return {name: t.shape for t in tensors(cfg) for name in _names(t, cfg)}


def canonical_name(name: str, cfg: ModelConfig) -> str:
  """A tensor name as the family's head class writes it: files of a bare base model (the
  original GPT-2 checkpoints, LlamaModel, BertModel) leave out the base model's prefix."""
  prefix = _PREFIX[layout(cfg)]
  outside = name == LM_HEAD or name.startswith(('cls.', prefix))  # '': T5 has no base prefix
  return name if outside else prefix + name


def _set(tree: dict, path: Path, value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree: dict, path: Path):
  for key in path:
    tree = tree[key]
  return tree


def to_llmjax(cfg: ModelConfig, read: Callable[[str], np.ndarray]) -> dict:
  """llmjax's nested parameter dict (numpy, `cfg.param_dtype`) from HF tensors.

  `read(name)` returns the HF tensor of a canonical name; it is called once per tensor.
  """
  dtype = jnp.dtype(cfg.param_dtype)  # a numpy dtype, bfloat16 included
  params: dict = {}
  for t in tensors(cfg):
    per_layer = [t.to_llmjax(read(name)) for name in _names(t, cfg)]
    for j, path in enumerate(t.paths):
      parts = [arrays[j] for arrays in per_layer]
      value = np.stack(parts) if '{i}' in t.name else parts[0]
      if t.adds:  # summed in float32
        value = np.asarray(_get(params, path), np.float32) + value.astype(np.float32)
      _set(params, path, value.astype(dtype))
  return params


def to_hf(cfg: ModelConfig, params: dict) -> dict[str, np.ndarray]:
  """HF tensors (canonical names, C-contiguous) from llmjax's nested parameter dict."""
  out = {}
  for t in tensors(cfg):
    values = [np.asarray(_get(params, path)) for path in t.paths]
    for i, name in enumerate(_names(t, cfg)):
      layer = [v[i] for v in values] if '{i}' in t.name else values
      out[name] = np.ascontiguousarray(t.to_hf(*layer))
  out.update({alias: out[name] for name, alias in ALIASES.items() if name in out})
  return out


def fold_problems(cfg: ModelConfig) -> list[str]:
  """The forward multipliers of `cfg` that no weight of an sp model can absorb."""
  if cfg.qk_norm and pz.attention_scale(cfg) is not None:
    return [f'the attention-score multiplier {pz.attention_scale(cfg):.4g} (model.parametri'
            f'zation={cfg.parametrization!r}): qk_norm would undo it in the query projection']
  return []


def fold_multipliers(cfg: ModelConfig, params: dict) -> dict:
  """The parameters of an sp model that computes what `cfg` (mup, completep) computes:
  the attention multiplier goes into the query projection (rope and the dot product are
  linear in q), each branch multiplier into its output projection, the input multiplier
  into the embedding tables (or the embedding norm that follows them) and the logit
  multiplier into the untied head, or into the norm before a head that is the (already
  scaled) embedding, and into an encoder's output bias. sp returns `params` as is."""
  if pz.is_sp(cfg):
    return params
  problems = fold_problems(cfg)
  if problems:
    raise ConversionError('cannot fold into Hugging Face weights: ' + '; '.join(problems))
  params = _copy_tree(params)

  def scale(path: Path, factor: float):
    if factor != 1.0 and _has(params, path):
      _set(params, path, (np.asarray(_get(params, path), np.float32) * factor).astype(
          np.asarray(_get(params, path)).dtype))

  attn = pz.attention_scale(cfg)
  q_factor = 1.0 if attn is None else attn * cfg.head_dim**0.5  # HF divides by sqrt(H)
  for name in ('wq', 'bq'):
    scale(('blocks', 'attn', name), q_factor)
  for path in (('blocks', 'attn', 'wo'), ('blocks', 'attn', 'bo'), ('blocks', 'mlp', 'w_out'),
               ('blocks', 'mlp', 'b_out')):
    scale(path, pz.branch_multiplier(cfg))
  inputs = pz.input_multiplier(cfg)
  if cfg.embed_norm:  # the multiplier follows the embedding norm (a norm would undo it)
    table = 1.0
    for name in ('scale', 'bias'):
      scale(('embed_norm', name), inputs)
  else:
    table = inputs
    scale(('embed', 'embedding'), inputs)
    scale(('pos_embedding',), inputs)
  logit_mult = pz.logit_multiplier(cfg)
  if cfg.tie_embeddings:  # logits = c n(x) E^T = (c / a) n(x) (a E)^T, a: the table's factor
    # n: the final norm, or an encoder's masked-LM head norm (it has no final norm).
    for norm in (('final_norm',), ('mlm_head', 'norm')):
      for name in ('scale', 'bias'):
        scale((*norm, name), logit_mult / table)
  else:
    scale(('unembed',), logit_mult)
  scale(('mlm_head', 'bias'), logit_mult)  # added to the logits before the multiplier
  return params


def _copy_tree(tree):
  return {k: _copy_tree(v) for k, v in tree.items()} if isinstance(tree, dict) else tree


def _has(tree: dict, path: Path) -> bool:
  for key in path:
    if not isinstance(tree, dict) or key not in tree:
      return False
    tree = tree[key]
  return True
