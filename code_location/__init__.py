"""The Dagster code location, assembled above every package it draws on."""
