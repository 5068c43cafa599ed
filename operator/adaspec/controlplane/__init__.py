"""Control plane: acceptance metrics, drift detection, adaptation, canary, promotion, rollback."""
