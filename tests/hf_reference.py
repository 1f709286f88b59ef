"""Reference models from `transformers` for the conversion tests (imported by test files;
pytest puts tests/ on the path): a tiny random model with every parameter moved off its
init, and its logits as numpy."""

import numpy as np
import torch
import transformers


def random_model(config: transformers.PretrainedConfig, head: str = 'causal_lm'):
  """A random float32 model of `config` (head: causal_lm | masked_lm), every parameter
  perturbed: norms at 1 and biases at 0, as initialized, would hide a misplaced norm or
  bias."""
  auto = {'causal_lm': transformers.AutoModelForCausalLM,
          'masked_lm': transformers.AutoModelForMaskedLM}[head]
  torch.manual_seed(0)
  model = auto.from_config(config)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  return model.eval()


def logits(model, tokens, **inputs) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(np.asarray(tokens)), **inputs).logits.numpy()
