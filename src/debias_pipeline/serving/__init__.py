"""Serving: a trained model packaged with its id maps (recommender) and the HTTP server over it (server)."""
