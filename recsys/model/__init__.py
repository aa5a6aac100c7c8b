"""The model plane: the network (plain torch) and the Recommender that scores with it."""
