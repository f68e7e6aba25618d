"""monkeyreport: from a folder of monkey photographs to a Spanish CNN report."""

__version__ = "0.1.0"
