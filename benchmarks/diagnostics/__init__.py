"""Model diagnostics: what a weights file or training checkpoint does inside, not how it compares with other codecs.

``python -m benchmarks.diagnostics.channels`` counts the latent channels a model uses; ``python -m
benchmarks.diagnostics.ceiling`` measures how far its transforms reach without quantisation; ``python -m
benchmarks.diagnostics.gap`` how much rate it spends at one λ beyond a fine-tune of itself there.
"""
