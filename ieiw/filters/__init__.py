"""What decides which candidates become the corpus: scorers, duplicates, calibration and the selection rules.

Scorers (``ieiw.scorers`` entry points: the quality proxy, the LAION aesthetic head, KNN-GIQA) read the
stored image features; :mod:`ieiw.filters.selection` turns scores into per-task thresholds and a verdict
with a named reason for every row. Nothing here makes pixels.
"""
