"""The Swarm dialect: the user's definition objects (seeds 000-002)."""
