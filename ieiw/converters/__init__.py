"""Converters: other vision datasets phrased as edits (segmentation, ...), as builders of the row schema."""
