"""MovieLens data: the file contract, vocabulary fingerprints and a synthetic generator."""
