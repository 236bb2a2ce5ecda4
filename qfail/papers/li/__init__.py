"""Li et al.: quantization and adversarial robustness, pipeline by pipeline.

``pipelines`` builds pipelines (a)-(e) and the quantization x attack matrix; ``verdicts``
states the findings.
"""
