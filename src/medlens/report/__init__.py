"""The HTML report: one self-contained page per experiment, an overview, and paper tables."""
