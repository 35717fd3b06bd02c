"""Model evaluation beyond training: held-out scoring of published models, test splits, and
the baselines on the candidates' cross-validation rows."""
