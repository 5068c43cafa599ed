"""Kopf operator reconciling AdaptiveSpeculator and SpeculatorRevision resources."""
