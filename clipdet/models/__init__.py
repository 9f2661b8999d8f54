"""Models: the registries of detectors and backbones, weight files, the factory that builds a
detector from its config, preprocessing, heads and the attribution spec."""
