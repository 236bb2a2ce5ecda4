"""Frank & Ardis: catastrophic failure under dynamic post-training quantization.

``stages`` is the shared black box -> student -> pairs set-up, ``bit_policy`` the per-input
bit-width policies under a budget, ``pairs`` the robust and detrimental network-policy pairs,
``analyses`` the figure analyses (layer-wise, histograms, corruptions, transitory points), and
``verdicts`` states the findings.
"""
