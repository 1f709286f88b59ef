"""The tensor map between Hugging Face checkpoints and llmjax parameters.

Two layouts cover every family: GPT-2's, and the rotary families' (Llama, Mistral, Qwen2:
the same names, Qwen2 adding q/k/v biases). One table per layout lists every HF tensor: its name, its HF shape, the llmjax
parameters it holds and the reshapes between the two layouts. Import and export
both read the table, so they cannot disagree. Names with '{i}' exist once per
layer; llmjax stacks them on its leading layers axis.

Layouts: GPT-2's Conv1D weights are stored (in, out) and `c_attn` packs q, k, v
along its output; Llama's nn.Linear weights are (out, in). Heads are the major
part of a projection's head axis in both, as in llmjax's (D, N, H). HF Llama
checkpoints already use the half-split rotary layout (rotate_half) that
llmjax's rope uses, so q and k need no permutation.
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

# Buffers some HF checkpoints carry that are not parameters: GPT-2's causal mask
# (attn.bias, attn.masked_bias) and old Llama rotary frequencies.
IGNORED = re.compile(r'(\.attn\.bias|\.attn\.masked_bias|rotary_emb\.inv_freq)$')
_PREFIX = {'gpt2': 'transformer.', 'rotary': 'model.'}  # of the base model inside *ForCausalLM
LM_HEAD = 'lm_head.weight'


@dataclasses.dataclass(frozen=True)
class Tensor:
  name: str  # HF name; '{i}' stands for the layer index
  shape: tuple[int, ...]  # HF shape (of one layer)
  paths: tuple[Path, ...]  # the llmjax parameters it holds
  to_llmjax: Callable[[np.ndarray], tuple[np.ndarray, ...]]  # HF array -> one per path
  to_hf: Callable[..., np.ndarray]  # one array per path -> HF array


def _copy(name: str, shape: tuple[int, ...], path: Path) -> Tensor:
  return Tensor(name, shape, (path,), lambda w: (w,), lambda w: w)


def _transposed(name: str, shape: tuple[int, ...], path: Path) -> Tensor:
  return Tensor(name, shape, (path,), lambda w: (w.T,), lambda w: w.T)


def _unembed(cfg: ModelConfig) -> list[Tensor]:
  if cfg.tie_embeddings:
    return []
  return [_transposed(LM_HEAD, (cfg.vocab_size, cfg.d_model), ('unembed',))]


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


def layout(cfg: ModelConfig) -> str:
  """'gpt2' (learned positions) or 'rotary' (Llama, Mistral, Qwen2)."""
  return 'gpt2' if options.POSITIONS[cfg.positions].table else 'rotary'


def tensors(cfg: ModelConfig) -> list[Tensor]:
  """The HF tensors of a model of `cfg`, with their llmjax counterparts."""
  return _gpt2(cfg) if layout(cfg) == 'gpt2' else _rotary(cfg)


def _names(tensor: Tensor, num_layers: int) -> list[str]:
  if '{i}' not in tensor.name:
    return [tensor.name]
  return [tensor.name.format(i=i) for i in range(num_layers)]


def hf_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
  """Every HF tensor name of a model of `cfg` (each layer's), with its shape."""
  return {name: t.shape for t in tensors(cfg) for name in _names(t, cfg.num_layers)}


def canonical_name(name: str, cfg: ModelConfig) -> str:
  """A tensor name as *ForCausalLM writes it: files of a bare base model (the original
  GPT-2 checkpoints, LlamaModel) leave out the 'transformer.'/'model.' prefix."""
  prefix = _PREFIX[layout(cfg)]
  return name if name.startswith(prefix) or name == LM_HEAD else prefix + name


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
    per_layer = [t.to_llmjax(read(name)) for name in _names(t, cfg.num_layers)]
    for j, path in enumerate(t.paths):
      parts = [arrays[j] for arrays in per_layer]
      value = np.stack(parts) if '{i}' in t.name else parts[0]
      _set(params, path, value.astype(dtype))
  return params


def to_hf(cfg: ModelConfig, params: dict) -> dict[str, np.ndarray]:
  """HF tensors (canonical names, C-contiguous) from llmjax's nested parameter dict."""
  out = {}
  for t in tensors(cfg):
    values = [np.asarray(_get(params, path)) for path in t.paths]
    for i, name in enumerate(_names(t, cfg.num_layers)):
      layer = [v[i] for v in values] if '{i}' in t.name else values
      out[name] = np.ascontiguousarray(t.to_hf(*layer))
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
  into the embedding tables and the logit multiplier into the untied head, or into the
  final norm when the head is the (already scaled) embedding. sp returns `params` as is."""
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
  scale(('embed', 'embedding'), inputs)
  scale(('pos_embedding',), inputs)
  if cfg.tie_embeddings:  # logits = c n(x) E^T = (c / a) n(x) (a E)^T
    for name in ('scale', 'bias'):
      scale(('final_norm', name), pz.logit_multiplier(cfg) / inputs)
  else:
    scale(('unembed',), pz.logit_multiplier(cfg))
  return params


def _copy_tree(tree):
  return {k: _copy_tree(v) for k, v in tree.items()} if isinstance(tree, dict) else tree


def _has(tree: dict, path: Path) -> bool:
  for key in path:
    if not isinstance(tree, dict) or key not in tree:
      return False
    tree = tree[key]
  return True
