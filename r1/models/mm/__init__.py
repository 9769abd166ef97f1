"""Multimodal family: image + question -> answer (R1-MM, CNN+MLP and CNN+RN baselines, Sort-of-CLEVR)."""
