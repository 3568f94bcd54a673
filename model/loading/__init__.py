"""Reading weights: checkpoint files (GGUF, safetensors, HF directories), their tensor names, FP8 and GGUF
dequantization, the repacked weight cache, and LoRA adapters."""
