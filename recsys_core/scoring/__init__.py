"""Scoring every user and the quality gate before publish."""
