"""Scoring with trained models: which model (registry), how (scorer), and the report."""
