"""Hu et al. 2022: disagreements between a model and its quantized version under shift.

``disagreements`` deploys models and counts where the deployed copy disagrees; ``published``
parses the paper's own result files; ``verdicts`` states the findings.
"""
