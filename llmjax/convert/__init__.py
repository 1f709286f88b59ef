"""Hugging Face interop: import GPT-2 and Llama checkpoints into llmjax, export llmjax models.

  hf_config   config.json <-> ModelConfig, and what Hugging Face cannot express
  hf_weights  the tensor map: HF tensor names and layouts <-> llmjax parameters
  hf          reading and writing HF folders (safetensors, tokenizer), warm starts
  __main__    python -m llmjax.convert hf-to-llmjax | llmjax-to-hf
"""
