"""Field monitoring: drift of production inputs against the assessed data (issue 20); no Prefect here."""
