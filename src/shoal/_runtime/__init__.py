"""Task-side runtime internals: channel, wire values, world API, driver-side service."""
