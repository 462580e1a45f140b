"""What the export handed over: the task/model registry (bundle names per model) and the typed, checksummed
manifest of an exported artifact folder."""
