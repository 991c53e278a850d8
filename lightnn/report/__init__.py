"""Reports: markdown/CSV tables for people, JSON for machines, PNG plots."""
