"""Quality control and records: per-bundle statistics, the preview picture, the study report and the run report."""
