"""Top-N recommendations for named users from a trained model."""
