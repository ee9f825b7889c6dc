"""Registered backends by kind (``inpaint``, ``verify``, ``repaint``, ``regions``, ``labels``, ``features``).

Each kind has one small interface, a real implementation that loads local weights, and an embedded CPU
default. A backend is registered as ``<kind>.<name>`` (pyproject's ``ieiw.backends`` entry points) and made
from its config section; it never reads shards or knows which builder calls it.
"""
