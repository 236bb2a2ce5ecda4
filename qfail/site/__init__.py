"""The book around the package: papermill runner, offline book build, widgets and figures.

Nothing here computes a cached result, so editing it never retrains a model.
"""
