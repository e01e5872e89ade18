"""The steps dialect (seed 003): artifacts, steps, queries, models and estimators.

``learn`` holds the dialect-independent federated transformers and models that the
dialect's operations wrap (DESIGN.md section 3b).
"""
