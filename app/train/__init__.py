"""Learning from verified solutions: training-data builders (`gsm8k.py`) and the LoRA SFT loop (`sft.py`),
behind `r1 train`. The data is written in the prompt and step format that `solve` decodes (reasoning/), so
training and inference see the same text."""
