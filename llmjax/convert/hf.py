"""Reading and writing Hugging Face model folders: config.json, safetensors, tokenizer.

Import reads `config.json` and `model.safetensors` (or the shards listed in
`model.safetensors.index.json`) and checks every tensor's name and shape
against the config before reading any data. Pickled PyTorch weights (`.bin`)
are never read: unpickling can run code. Export writes what
`transformers.AutoModelForCausalLM.from_pretrained` (`AutoModelForMaskedLM` for an
encoder) loads with no missing or unexpected keys, through `safetensors.numpy`, so no
torch is needed.
"""

import contextlib
import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from llmjax.convert import hf_tokenizer, hf_weights
from llmjax.convert.hf_config import (ConversionError, architecture_mismatch, config_from_hf,
                                      config_to_hf)
from llmjax.data.tokenizers import HuggingFaceTokenizer
from llmjax.model.config import DTYPES, ModelConfig
from llmjax.model.transformer import Transformer

INDEX = 'model.safetensors.index.json'
WEIGHTS = 'model.safetensors'
_PICKLES = ('.bin', '.pt', '.pth', '.ckpt')
TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json',
                   'vocab.json', 'merges.txt', 'tokenizer.model', 'added_tokens.json')
_MAX_LISTED = 20  # problems listed in one error before '... and N more'


def read_config(folder, dtype: str = 'float32') -> ModelConfig:
  """The ModelConfig of a Hugging Face folder's config.json."""
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise FileNotFoundError(f'Hugging Face folder {folder} does not exist')
  if not (folder / 'config.json').is_file():
    raise FileNotFoundError(f'no config.json in {folder}; expected a Hugging Face model folder '
                            f'(config.json and {WEIGHTS})')
  if dtype not in DTYPES:
    raise ValueError(f'dtype {dtype!r}; choose one of {", ".join(DTYPES)}')
  return config_from_hf(json.loads((folder / 'config.json').read_text()), dtype)


def _weight_files(folder: pathlib.Path) -> list[pathlib.Path]:
  if (folder / INDEX).is_file():
    names = sorted(set(json.loads((folder / INDEX).read_text())['weight_map'].values()))
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
      raise FileNotFoundError(f'{folder / INDEX} lists shards that are not there: '
                              f'{", ".join(missing)}')
    return [folder / n for n in names]
  files = sorted(folder.glob('*.safetensors'))
  if files:
    return files
  pickles = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLES)
  if pickles:
    raise ConversionError(
        f'{folder} holds only PyTorch pickle weights ({", ".join(pickles)}); llmjax reads '
        f'safetensors only, since unpickling can run code. Convert them first, e.g. '
        f'AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(OUT, safe_serialization=True)')
  raise FileNotFoundError(f'no weights in {folder}: expected {WEIGHTS} or {INDEX} and its shards')


def _headers(folder: pathlib.Path, cfg: ModelConfig) -> dict[str, tuple]:
  """Canonical tensor name -> (file, shape, name in the file), from the headers only."""
  found = {}
  for file in _weight_files(folder):
    with safe_open(file, framework='numpy') as f:
      for name in f.keys():
        canonical = hf_weights.canonical_name(name, cfg)
        if canonical in found:
          raise ConversionError(f'tensor {canonical} appears twice in {folder}')
        found[canonical] = (file, tuple(f.get_slice(name).get_shape()), name)
  for name, alias in hf_weights.ALIASES.items():
    if alias in found:
      found.setdefault(name, found[alias])
      del found[alias]
  return found


def _check_tensors(folder: pathlib.Path, cfg: ModelConfig, found: dict) -> None:
  """Every expected tensor present with its shape, and no tensor left unused."""
  expected, head = hf_weights.hf_shapes(cfg), hf_weights.head_name(cfg)
  if cfg.tie_embeddings and head in found:
    # Some tied checkpoints store the head anyway; load_hf checks it equals the embedding.
    expected[head] = (cfg.vocab_size, cfg.d_model)
  problems = []
  for name, shape in expected.items():
    if name not in found:
      problems.append(f'{name}: missing (expected shape {shape})')
    elif found[name][1] != shape:
      problems.append(f'{name}: shape {found[name][1]} in the file, {shape} from config.json')
  problems += [f'{name}: unexpected tensor (not part of a model of this config.json)'
               for name in found
               if name not in expected and not hf_weights.IGNORED.search(name)]
  if problems:
    more = len(problems) - _MAX_LISTED
    listed = problems[:_MAX_LISTED] + ([f'... and {more} more'] if more > 0 else [])
    raise ConversionError(f'the weights in {folder} do not match its config.json:\n  ' +
                          '\n  '.join(listed))


def _inspect(folder: pathlib.Path, dtype: str) -> tuple[ModelConfig, dict]:
  """(config, tensor headers), checked against each other; reads no tensor data."""
  cfg = read_config(folder, dtype)
  found = _headers(folder, cfg)
  _check_tensors(folder, cfg, found)
  return cfg, found


def check_folder(folder, dtype: str = 'float32') -> ModelConfig:
  """The ModelConfig of a Hugging Face folder whose tensors were all checked against it
  (names and shapes, from the file headers; no tensor data is read)."""
  return _inspect(pathlib.Path(folder), dtype)[0]


def read_params(folder, dtype: str = 'float32') -> tuple[ModelConfig, dict]:
  """(config, llmjax's nested parameter dict of numpy arrays) of a Hugging Face folder."""
  folder = pathlib.Path(folder)
  cfg, found = _inspect(folder, dtype)
  with contextlib.ExitStack() as stack:
    files = {file: stack.enter_context(safe_open(file, framework='numpy'))
             for file in {file for file, _, _ in found.values()}}

    def read(name: str) -> np.ndarray:
      file, _, stored_name = found[name]
      return files[file].get_tensor(stored_name)

    params, head = hf_weights.to_llmjax(cfg, read), hf_weights.head_name(cfg)
    if cfg.tie_embeddings and head in found:
      if not np.array_equal(read(head).astype(params['embed']['embedding'].dtype),
                            params['embed']['embedding']):
        raise ConversionError(f'{folder}: {head} differs from the input embedding '
                              f'although config.json ties them (tie_word_embeddings)')
  return cfg, params


def _fitting_tokenizer(file: pathlib.Path, vocab_size: int) -> HuggingFaceTokenizer:
  """A tokenizer.json whose token ids all fit a model of `vocab_size`."""
  tokenizer = HuggingFaceTokenizer(str(file))
  if tokenizer.vocab_size > vocab_size:
    raise ConversionError(f'{file} has {tokenizer.vocab_size} tokens but the model has '
                          f'vocab_size={vocab_size}: its embedding cannot hold every token id')
  return tokenizer


def model_type(folder) -> str:
  """The family (`model_type`) of a Hugging Face folder whose config.json llmjax reads."""
  return json.loads((pathlib.Path(folder) / 'config.json').read_text())['model_type']


def load_hf(path, dtype: str = 'float32') -> tuple[Transformer, HuggingFaceTokenizer | None]:
  """A Hugging Face folder (hf_config.FAMILIES) as an llmjax model, and its tokenizer.

  Args:
    path: folder with config.json and safetensors weights (tokenizer.json optional).
    dtype: parameter and compute dtype: float32 (default, exact) or bfloat16.
  Returns:
    (Transformer, HuggingFaceTokenizer or None when the folder has no tokenizer.json).
  """
  folder = pathlib.Path(path)
  cfg = read_config(folder, dtype)
  tokenizer = None
  if (folder / 'tokenizer.json').is_file():  # checked before the weights are read
    tokenizer = _fitting_tokenizer(folder / 'tokenizer.json', cfg.vocab_size)
  _, params = read_params(folder, dtype)
  graphdef, state = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0))))
  state.replace_by_pure_dict(jax.tree.map(jnp.asarray, params))
  return nnx.merge(graphdef, state), tokenizer


def check_warm_start(folder, run: ModelConfig) -> None:
  """Raises unless the Hugging Face folder can initialize a run of model `run`."""
  imported = check_folder(folder, run.param_dtype)
  mismatch = architecture_mismatch(run, imported)
  if mismatch:
    raise ConversionError(f'{folder} holds a different model than config.model:\n  ' +
                          '\n  '.join(mismatch))


def params_like(folder, abstract_params: nnx.State) -> nnx.State:
  """The folder's weights as `abstract_params` (shapes, dtypes, shardings) lays them out.

  Each device receives only its shard of each array, so any mesh works, across
  processes too (each process reads the files).
  """
  target = abstract_params.to_pure_dict()
  dtype = jax.tree.leaves(target)[0].dtype
  _, params = read_params(folder, jnp.dtype(dtype).name)

  def place(path, array, spec):
    if array.shape != spec.shape:
      raise ConversionError(f'{folder}: parameter {jax.tree_util.keystr(path)} has shape '
                            f'{array.shape}, the run expects {spec.shape}')
    array = array.astype(spec.dtype)
    return jax.make_array_from_callback(spec.shape, spec.sharding, lambda index: array[index])

  state = jax.tree.map(lambda a: a, abstract_params)  # a copy: the caller's stays abstract
  state.replace_by_pure_dict(jax.tree_util.tree_map_with_path(place, params, target))
  return state


def _tokenizer_sources(tokenizer_dir) -> dict[str, pathlib.Path]:
  """Name in the exported folder -> file to copy there."""
  source = pathlib.Path(tokenizer_dir)
  if source.is_file():
    return {'tokenizer.json' if source.suffix == '.json' else source.name: source}
  files = {n: source / n for n in TOKENIZER_FILES if (source / n).is_file()}
  if not files:
    raise FileNotFoundError(f'no tokenizer files in {source}; expected one of '
                            f'{", ".join(TOKENIZER_FILES)}')
  return files


def check_export(cfg: ModelConfig, out_dir, overwrite: bool = False,
                 dtype: str = 'float32', kind: str | None = None) -> None:
  """Raises unless a model of `cfg` can be written to `out_dir` (see `save_hf`)."""
  if dtype not in DTYPES:
    raise ValueError(f'dtype {dtype!r}; choose one of {", ".join(DTYPES)}')
  problems = hf_weights.fold_problems(cfg)  # first: more specific than what HF lacks
  if problems:
    raise ConversionError('cannot fold into Hugging Face weights: ' + '; '.join(problems))
  config_to_hf(cfg, dtype, kind=kind)
  out = pathlib.Path(out_dir)
  if out.exists() and any(out.iterdir()) and not overwrite:
    raise FileExistsError(f'{out} is not empty; choose another folder or overwrite it '
                          f'(overwrite=True, --overwrite)')


def _write_tokenizer(out: pathlib.Path, cfg: ModelConfig, tokenizer_dir, run_tokenizer):
  """Writes the tokenizer files; returns end-of-text's id (None without a tokenizer)."""
  if run_tokenizer is not None:
    converted, eot = run_tokenizer
    hf_tokenizer.write(out, converted, eot, cfg.max_len)
    return converted.token_to_id(eot)
  files = _tokenizer_sources(tokenizer_dir) if tokenizer_dir else {}
  for name, file in files.items():
    shutil.copyfile(file, out / name)
  if 'tokenizer.json' not in files:
    return None
  tokenizer = _fitting_tokenizer(files['tokenizer.json'], cfg.vocab_size)
  if 'tokenizer_config.json' not in files:  # what AutoTokenizer needs beside tokenizer.json
    eot = tokenizer._tok.id_to_token(tokenizer.eot_id)
    config = dict(tokenizer_class='PreTrainedTokenizerFast', model_max_length=cfg.max_len,
                  eos_token=eot, clean_up_tokenization_spaces=False)
    (out / 'tokenizer_config.json').write_text(json.dumps(config, indent=2) + '\n')
  return tokenizer.eot_id


def save_hf(model: Transformer, out_dir, tokenizer_dir=None, overwrite: bool = False,
            dtype: str = 'float32', kind: str | None = None,
            run_tokenizer: tuple | None = None) -> pathlib.Path:
  """Writes `model` as a Hugging Face folder (hf_config.FAMILIES).

  Args:
    model: the llmjax Transformer.
    out_dir: the folder to write; it must be empty or absent unless `overwrite`.
    tokenizer_dir: a tokenizer.json, or a folder whose tokenizer files are copied.
    overwrite: replace the files of a non-empty `out_dir`.
    dtype: dtype of the written tensors: float32 (default) or bfloat16.
    kind: the family (model_type); default `hf_config.family`: encoders export as bert,
      learned positions as gpt2, q/k/v biases as qwen2, the rest as llama (mistral when
      asked).
    run_tokenizer: (tokenizers.Tokenizer, end-of-text) from `hf_tokenizer.of_run`,
      written instead of copying `tokenizer_dir`.
  Returns:
    The folder written; a mup/completep model's forward multipliers folded into its
    weights (`hf_weights.fold_multipliers`). Raises ConversionError for a model HF cannot
    express (or a multiplier that cannot be folded),
    FileExistsError for a non-empty `out_dir`, both before writing anything.
  """
  cfg, out = model.cfg, pathlib.Path(out_dir)
  check_export(cfg, out, overwrite, dtype, kind)
  if tokenizer_dir and run_tokenizer is None:  # checked before anything is written
    files = _tokenizer_sources(tokenizer_dir)
    if 'tokenizer.json' in files:
      _fitting_tokenizer(files['tokenizer.json'], cfg.vocab_size)
  if overwrite and out.exists():
    for stale in [*out.glob('*.safetensors'), out / INDEX]:  # never mix in old shards
      stale.unlink(missing_ok=True)
  params = jax.device_get(nnx.state(model, nnx.Param).to_pure_dict())
  # muP's forward multipliers go into the weights: transformers computes sp only.
  params = hf_weights.fold_multipliers(cfg, params)
  tensors = {name: array.astype(jnp.dtype(dtype))
             for name, array in hf_weights.to_hf(cfg, params).items()}
  out.mkdir(parents=True, exist_ok=True)
  eos = _write_tokenizer(out, cfg, tokenizer_dir, run_tokenizer)
  # transformers checks the 'format' metadata before it reads a safetensors file.
  save_file(tensors, str(out / WEIGHTS), metadata={'format': 'pt'})
  (out / 'config.json').write_text(json.dumps(config_to_hf(cfg, dtype, eos, kind), indent=2)
                                   + '\n')
  if eos is not None:  # generate() stops at end-of-text and pads with it
    generation = dict(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    (out / 'generation_config.json').write_text(json.dumps(generation, indent=2) + '\n')
  return out
