"""Builders that write each dataset source's real on-disk layout in miniature into a test folder.

One module per source, each with ``build(root) -> <Source>Fixture``: a handful of generated images and
CSV/JSON files in the exact schema of ``../shared/datasets.md``, with that section's naming styles and
pitfalls, plus the facts the tests check (expected ids, labels, patients and splits). Nothing here is
real data; images are seeded noise, so every file differs from every other one.
"""
