"""`adaspec up`: the whole fleet on one machine (two runtimes, the control plane, one endpoint in front)."""
