"""Analyses of suites: registered plug-ins applied by one runner (see base.py and runner.py)."""
from .base import Analysis, AnalysisError, CheckpointContext, Option, Row, available, get, register

__all__ = ["Analysis", "AnalysisError", "CheckpointContext", "Option", "Row", "available", "get", "register"]
