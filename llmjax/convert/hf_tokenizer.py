"""Tokenizers of llmjax runs as Hugging Face tokenizer folders that stand alone.

A run's tokenizer (the byte tokenizer, a SentencePiece model) is written as a
`tokenizer.json` with its `tokenizer_config.json` and `special_tokens_map.json`, so
`transformers.AutoTokenizer.from_pretrained(folder)` loads it. llmjax starts every
document with end-of-text; the exported tokenizer's post-processor puts that token
first (and it is the BOS token), so a text prompt encoded by transformers is what
llmjax's model saw at a document's start, and `generate` continues it the same way.
"""

import json
import pathlib

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

from llmjax.data.tokenizers import ByteTokenizer, HuggingFaceTokenizer, SentencePieceTokenizer

EOT = '<|endoftext|>'  # the byte tokenizer's end-of-text, named as GPT-2 names it
MASK = '[MASK]'  # the masked-LM objective's mask token (one past the tokenizer's ids), as BERT
FILES = ('tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json')


def _byte_chars() -> list[str]:
  """GPT-2's printable stand-in of each byte (what transformers' ByteLevel pre-tokenizer
  maps it to): printable Latin-1 bytes stand for themselves, the 68 others take the code
  points from 256 on, in byte order."""
  printable = [*range(ord('!'), ord('~') + 1), *range(ord('¡'), ord('¬') + 1),
               *range(ord('®'), ord('ÿ') + 1)]
  others = iter(range(256, 256 + 256 - len(printable)))
  return [chr(b) if b in printable else chr(next(others)) for b in range(256)]


def byte_level() -> Tokenizer:
  """The byte tokenizer as a `tokenizers.Tokenizer`: byte-level BPE (GPT-2's byte alphabet)
  with no merges, so each UTF-8 byte b is id b; id 256 is end-of-text. Decoding replaces
  an invalid byte sequence as bytes.decode(errors='replace') does, like ByteTokenizer."""
  byte = ByteTokenizer()
  vocab = {char: b for b, char in enumerate(_byte_chars())} | {EOT: byte.eot_id}
  tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
  # One piece per text (no regex split) and no prefix space: only the bytes themselves.
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  tokenizer.decoder = decoders.ByteLevel()
  tokenizer.add_special_tokens([EOT])
  return tokenizer


def sentencepiece(path) -> Tokenizer:
  """A SentencePiece model as a `tokenizers.Tokenizer` that encodes as it does, built by
  transformers' converter (which reads the model's normalizer and merges)."""
  try:
    from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf
  except ImportError:
    raise ValueError('exporting a SentencePiece tokenizer needs transformers '
                     '(pip install transformers)') from None
  proto = import_protobuf().ModelProto()
  proto.ParseFromString(pathlib.Path(path).read_bytes())
  pieces = [(p.piece, p.score) for p in proto.pieces]
  unigram = proto.trainer_spec.model_type == 1  # else BPE (2)
  vocab = pieces if unigram else {piece: i for i, (piece, _) in enumerate(pieces)}
  tokenizer = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab, legacy=False)
  if tokenizer is None:
    raise ValueError(f'{path}: SentencePiece model_type {proto.trainer_spec.model_type} '
                     f'cannot be converted (only unigram and bpe)')
  # Unknown and control pieces (<unk>, <s>, </s>) are special: never produced from text.
  tokenizer.add_special_tokens([p.piece for p in proto.pieces if p.type in (2, 3)])
  return tokenizer


def _starting_with(tokenizer: Tokenizer, token: str, token_id: int) -> Tokenizer:
  """`tokenizer`, with `token` put before every encoded text (add_special_tokens)."""
  tokenizer.post_processor = processors.TemplateProcessing(
      single=f'{token} $A', pair=f'{token} $A {token} $B', special_tokens=[(token, token_id)])
  return tokenizer


def with_mask(tokenizer: Tokenizer, mask_id: int) -> Tokenizer:
  """`tokenizer` with MASK as a special token at `mask_id`, which must be the next free id
  (the masked-LM objective puts its mask one past the tokenizer's ids)."""
  if tokenizer.get_vocab_size(with_added_tokens=True) != mask_id:
    raise ValueError(f'the mask token is id {mask_id}, but the tokenizer has '
                     f'{tokenizer.get_vocab_size(with_added_tokens=True)} ids: it cannot be '
                     f'added as the next one')
  tokenizer.add_special_tokens([MASK])
  return tokenizer


def with_sentinels(tokenizer: Tokenizer, sentinel_ids) -> Tokenizer:
  """`tokenizer` with T5's sentinels <extra_id_0>, ... as special tokens at `sentinel_ids`,
  which must be the next free ids in order (span corruption puts them past the tokenizer's
  ids when it has none), so a run's export and its re-import read the same sentinels."""
  ids = list(sentinel_ids)
  if ids and ids != list(range(tokenizer.get_vocab_size(with_added_tokens=True),
                               tokenizer.get_vocab_size(with_added_tokens=True) + len(ids))):
    raise ValueError(f'sentinel ids {ids[0]}..{ids[-1]} are not the next free ids of a '
                     f'tokenizer of {tokenizer.get_vocab_size(with_added_tokens=True)} ids')
  tokenizer.add_special_tokens([f'<extra_id_{i}>' for i in range(len(ids))])
  return tokenizer


def of_run(tokenizer, mask_id: int | None = None,
           sentinel_ids=()) -> tuple[Tokenizer, str] | None:
  """(tokenizer.json as a Tokenizer that starts each text with end-of-text, end-of-text's
  text) of an llmjax tokenizer object, with MASK at `mask_id` if given (masked-LM runs)
  and sentinels at `sentinel_ids` (span-corruption runs of a tokenizer without its own);
  None for kinds that have none (a tokenizer.json already is one; synthetic languages have
  no text)."""
  if isinstance(tokenizer, ByteTokenizer):
    converted, eot = byte_level(), EOT
  elif isinstance(tokenizer, SentencePieceTokenizer):
    converted = sentencepiece(tokenizer.path)
    eot = converted.id_to_token(tokenizer.eot_id)
  else:
    return None
  if mask_id is not None:
    with_mask(converted, mask_id)
  with_sentinels(converted, sentinel_ids)
  return _starting_with(converted, eot, tokenizer.eot_id), eot


def of_hf_file(path, mask_id: int | None = None) -> tuple[Tokenizer, str]:
  """A run's tokenizer.json (data.tokenizer='hf:PATH'), made to start each text with
  end-of-text, as the run's documents did; with MASK at `mask_id` if given."""
  llmjax_view = HuggingFaceTokenizer(path)
  file = pathlib.Path(path)
  tokenizer = Tokenizer.from_file(str(file / 'tokenizer.json' if file.is_dir() else file))
  if mask_id is not None:
    with_mask(tokenizer, mask_id)
  eot = tokenizer.id_to_token(llmjax_view.eot_id)
  return _starting_with(tokenizer, eot, llmjax_view.eot_id), eot


def write(folder, tokenizer: Tokenizer, eot: str, max_len: int) -> None:
  """tokenizer.json and what transformers reads beside it; end-of-text is BOS, EOS and
  padding, and MASK, where the tokenizer has it, the mask token (fill-mask pipelines)."""
  folder = pathlib.Path(folder)
  tokenizer.save(str(folder / 'tokenizer.json'))
  special = dict(bos_token=eot, eos_token=eot, pad_token=eot)
  if tokenizer.token_to_id(MASK) is not None:
    special['mask_token'] = MASK
  config = dict(tokenizer_class='PreTrainedTokenizerFast', model_max_length=max_len,
                add_bos_token=True, clean_up_tokenization_spaces=False, **special)
  (folder / 'tokenizer_config.json').write_text(json.dumps(config, indent=2) + '\n')
  (folder / 'special_tokens_map.json').write_text(json.dumps(special, indent=2) + '\n')
