"""The Dagster wiring, autoloaded by `definitions.py`: one folder per stage of the data's way
(accounts -> requests -> downloads -> exports), plus the resources and the partitions."""
