"""The network: the transformer block and its parts (attention, MLA, MoE, MLP, norms, rope, quantized linears),
the paged KV cache and the block-sparse attention that reads it."""
