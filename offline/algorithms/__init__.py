"""Fitting code of the non-factor algorithms (item-kNN, EASE): pure, arrays in and arrays out.
Imports numpy, scipy, threadpoolctl and implicit (lazily) only."""
