"""Inpainting backends for removal: OpenCV (embedded), LaMa in process, lama-cleaner / IOPaint servers."""
