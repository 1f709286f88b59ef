"""The `finetune` config section (a dataclass the experiment config holds)."""

import dataclasses

TASKS = ('lm', 'sft', 'classify')
TRUNCATIONS = ('error', 'left')


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
  # lm: next-token training on data.source (pretraining); sft: (prompt, completion) examples,
  # loss on completion tokens only; classify: a label per text, cross-entropy over labels.
  task: str = 'lm'
  # Fine-tune examples: builtin:NAME (a built-in task's shape, made from the files the
  # pretraining split trains on; evaluated on that task's held-out examples), tfds:NAME (a
  # prepared TFDS set of llmjax.eval.tfds_tasks: its train split; held out, the split its
  # eval task scores) or jsonl:PATH (one example per line; eval_data names the held-out
  # file).
  train_data: str = ''
  eval_data: str = ''  # jsonl:PATH of held-out examples (builtin: the task's own)
  prompt_field: str = 'prompt'  # sft JSONL fields
  completion_field: str = 'completion'
  messages_field: str = 'messages'  # sft chat: a list of {role, text} turns (see chat.py)
  text_field: str = 'text'  # classify JSONL fields
  label_field: str = 'label'
  # classify: the declared label set, as the label field spells them; or num_labels for
  # labels 0..num_labels-1. The head's row of each label starts at its label word (' ' + label).
  labels: tuple[str, ...] = ()
  num_labels: int = 0
  prompt_suffix: str = ''  # classify JSONL: appended to each text (e.g. '\nSentiment:')
  # An example longer than data.seq_len: error, or left (its oldest prompt tokens are dropped).
  truncate: str = 'error'
  max_examples: int = -1  # training examples used; -1: all
  builtin_files: int = 200  # builtin: training files sampled for examples
  predictions: int = 4  # end of run: eval examples printed with their predictions
