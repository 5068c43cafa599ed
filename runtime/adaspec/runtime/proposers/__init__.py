"""Speculators ("proposers"): one small interface, one factory."""
