"""InstructDiffusion training on IEIW shards: streaming data, the 8-channel SD1.5 model, the accelerate
loop with EMA and exact resume, export to a diffusers pipeline, and the edit CLI. See docs/training.md.

Heavy libraries (torch, diffusers, transformers, accelerate) are imported by the modules that need them,
so ``import ieiw`` stays light for the builder.
"""
