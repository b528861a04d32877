"""Experiments: a declarative config (config), its stages keyed by their inputs (stages), the runner that
executes them resumably (runner), and the tables, plots, report and lineage built from them (results)."""
