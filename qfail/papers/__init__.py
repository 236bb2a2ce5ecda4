"""The four works, one subpackage each: what is specific to one paper lives here.

* :mod:`qfail.papers.moon` -- CartPole decision consistency under PTQ and QAT (Moon).
* :mod:`qfail.papers.hu` -- disagreements between a model and its quantized self under shift (Hu et al. 2022).
* :mod:`qfail.papers.li` -- where robustness enters the quantization pipeline (Li et al.).
* :mod:`qfail.papers.frank` -- catastrophic failure under dynamic PTQ (Frank & Ardis).
* :mod:`qfail.papers.at_scale` -- each work's key experiment on Fashion-MNIST, composed from the four.

Each holds its experiment code and a ``verdicts`` module that turns measurement tables into the
verdict rows its chapter shows. Papers import the shared layers (``qfail.quant``, ``data``,
``train``, ...), never each other; only ``at_scale`` composes them.
"""
