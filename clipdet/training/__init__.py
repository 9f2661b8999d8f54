"""Training heads on frozen features: detectors, attributors, open-set splits."""
