"""The run directory: its files, its identity (name and fingerprints), its lock, and the typed record every reader reads."""
