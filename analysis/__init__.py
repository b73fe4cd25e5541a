"""Reads a sweep from MLflow and writes its plots and tables.

`python -m analysis.report --experiment NAME` is the entry point (see analysis.report).
Modules: runs (load trials), outcomes (per-setting finals and deltas), frontier (Pareto
front of ID gain vs OOD retention), tables (Table 1), plots (figures), page (report.html),
synthetic (a synthetic sweep in the MLflow layout, for tests and examples), errors
(AnalysisError, the error users can act on).
"""
