"""The job dialect (seed 004): FedJob and its objects build a job description (a plan)."""
