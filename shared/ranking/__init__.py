"""The pure ranking core over one model version (recommender, scoring, top-k, strategies, fold-in,
batching): the API serves it and the tradeoff lab replays it. Imports numpy and `shared` only."""
