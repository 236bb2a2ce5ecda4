"""Verification of quantized networks: extraction, sound bounds, decision consistency.

``program`` turns a network into the exact arithmetic it runs, ``bounds`` propagates input boxes
through it (IBP, CROWN), ``consistency`` certifies or refutes that a quantized network decides as
its original on a box (falsifier plus branch and bound).
"""
from qfail.verify.bounds import BOUND_METHODS, bounds, certified_actions, margin_spec
from qfail.verify.consistency import Consistency, consistency_sweep, falsify, grid_boxes, verify_consistency
from qfail.verify.program import ActQuant, Affine, Program, ReLU, extract

__all__ = ["ActQuant", "Affine", "Program", "ReLU", "extract", "BOUND_METHODS", "bounds", "certified_actions",
           "margin_spec", "Consistency", "consistency_sweep", "falsify", "grid_boxes", "verify_consistency"]
