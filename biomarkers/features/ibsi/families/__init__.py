"""IBSI feature families (one module per group of families)."""
