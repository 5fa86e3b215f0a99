//! The bound on every loop that goes round again because of what it read from shared
//! memory.
//!
//! A lock-free step retries when another participant moved first (a lost compare-and-swap,
//! a slot published or consumed between two loads). Under any run of the protocol a few
//! rounds settle it, but a peer that writes garbage, or keeps rewriting a word, could keep
//! a step going round forever. So each such loop takes a [`Retries`] budget; a step that
//! spends it stops with a verdict (a ring's claim: `Corrupted`, on a fresh read; a pool's
//! free list: corrupt; a count that only saves syscalls: left as it is), and a blocking
//! call's deadline then bounds the rest. The rule for every structure of the workspace: a
//! loop over shared words without a budget or a deadline is a bug.

/// Rounds one step may take: 2^16. A run of the protocol needs one per participant that
/// moves first, which is at most a few thousand even with every participant of a
/// 1024-entry table racing on one word; 2^16 rounds take about a millisecond.
pub const RETRY_LIMIT: u32 = 1 << 16;

/// What is left of a step's budget of rounds ([`RETRY_LIMIT`]).
#[derive(Debug)]
pub struct Retries(u32);

impl Default for Retries {
    /// A full budget.
    fn default() -> Self {
        Self::new()
    }
}

impl Retries {
    /// A full budget.
    #[inline(always)]
    #[must_use]
    pub const fn new() -> Self {
        Retries(RETRY_LIMIT)
    }

    /// Takes one more round: `false` once the budget is spent.
    #[inline(always)]
    #[must_use]
    pub fn again(&mut self) -> bool {
        self.0 = self.0.saturating_sub(1);
        self.0 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_exactly_the_limit_of_rounds() {
        let mut retries = Retries::new();
        let mut rounds = 1; // the first round is not a retry
        while retries.again() {
            rounds += 1;
        }
        assert_eq!(rounds, RETRY_LIMIT);
        assert!(!retries.again(), "a spent budget stays spent");
    }
}
