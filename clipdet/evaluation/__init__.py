"""Evaluation: metrics, attribution metrics, reports, plots, perturbations, laundering and
the reproduction report."""
