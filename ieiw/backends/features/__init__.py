"""Image feature extractors: the embedded descriptor, CLIP, and FID's InceptionV3."""
