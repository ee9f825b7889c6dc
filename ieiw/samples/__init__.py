"""Synthetic samples in the real formats: the data of the embedded mode and of the tests.

Each generator writes one external format (VGPhraseCut, SA-1B + Open Images, COCO-style segmentation and
keypoints, the enhancement datasets' layouts, edit datasets, Pushshift dumps + a response cache) so that
the readers under :mod:`ieiw.sources` and the builders run on it exactly as on the real files.
"""
