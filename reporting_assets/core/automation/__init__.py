"""The sensors' and schedules' state and arithmetic, free of Dagster: pending partitions, ranges, exports."""
