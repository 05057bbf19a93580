"""The study's hypotheses, measured on simulated worlds whose truth is known."""
