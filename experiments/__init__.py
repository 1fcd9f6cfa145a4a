"""Sacred experiments: ``python -m experiments.<task> with key=value``.

Tasks: inr_classification, inr_editing, cnn_generalization,
transformer_generalization; ``compare`` runs several models on one of them.
"""
