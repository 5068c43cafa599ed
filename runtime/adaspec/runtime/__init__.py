"""adaspec runtime: target model, proposers, confidence-aware controller, verification, serving."""
