"""Evaluation of encoders and decoders: zero-shot, retrieval, linear probes, report metrics."""
