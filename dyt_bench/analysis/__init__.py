"""Analyses of trained (or freshly built) models: the norm probe command and its figures."""
