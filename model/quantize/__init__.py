"""Quantizing float checkpoints (`r1 quantize`): GPTQ and round-to-nearest, written in the GPTQ layout."""
