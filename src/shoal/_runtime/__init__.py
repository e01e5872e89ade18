"""Task-side runtime internals: the channel, its protocol, the world API, module loading."""
