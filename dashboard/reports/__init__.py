"""Planner reports: the rows behind them (CSV) and a printable summary (PDF)."""
