"""Pure policies: `decide(observation, policy, state, now) -> (Decision, state)`, no I/O, no clock."""
