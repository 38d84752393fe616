"""Training Recommender: a hybrid LightFM recommender of internal and external trainings."""
