"""Evaluation: ranking metrics, the evaluation protocols (splits and evaluators), scoring of new users and metrics against the simulator's truth."""
