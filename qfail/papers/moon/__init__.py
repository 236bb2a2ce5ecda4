"""Moon: does a quantized CartPole controller decide as its full-precision original?

``controller`` trains the CartPole controller and its quantization-aware copies; ``inn`` is
Moon's interval neural network as published and corrected; ``verdicts`` states the findings.
"""
