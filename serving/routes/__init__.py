"""Versioned HTTP routes of the prediction API."""
