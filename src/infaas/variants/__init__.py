"""Variant generation, profiling and the checks uploads pass first."""
