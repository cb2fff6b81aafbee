"""Drift detectors and domain-adaptation policies (issue: drift detection triggers adaptation)."""
