"""Run folders: every path inside one, run.json, opening a run's study, atomic files, provenance."""
