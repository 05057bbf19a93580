"""Configuration: the typed parameter blocks (params) and the config loader with per-dataset defaults (loader)."""
