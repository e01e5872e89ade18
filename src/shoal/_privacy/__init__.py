"""Privacy budgets: the ledger a node (and each simulated node) keeps per dataset."""
