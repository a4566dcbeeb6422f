from helpers.prepared import make_prepared  # noqa: F401  (fixture)
