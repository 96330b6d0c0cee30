//! Pricing: what a number of served tokens costs, from the per-token prices of the
//! worker's signed announcement (prompt and completion tokens priced apart).

use serde::{Deserialize, Serialize};

use super::units::{CoinsOverflow, NanoTon};
use crate::announce::Prices;

/// Tokens served so far in a channel, counted cumulatively.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt (prefill) tokens processed.
    pub prompt_tokens: u64,
    /// Completion (decode) tokens produced.
    pub completion_tokens: u64,
}

impl Usage {
    /// `self + other`, saturating (a saturated count is priced beyond any budget).
    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens.saturating_add(other.prompt_tokens),
            completion_tokens: self
                .completion_tokens
                .saturating_add(other.completion_tokens),
        }
    }
}

/// Prices per token, in nanotons.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    /// Price of one prompt token.
    pub per_prompt_token: NanoTon,
    /// Price of one completion token.
    pub per_completion_token: NanoTon,
}

impl Price {
    /// The cost of `usage`; refuses a cost that does not fit `Coins`.
    pub fn cost(&self, usage: Usage) -> Result<NanoTon, CoinsOverflow> {
        let p = self
            .per_prompt_token
            .0
            .checked_mul(u128::from(usage.prompt_tokens));
        let c = self
            .per_completion_token
            .0
            .checked_mul(u128::from(usage.completion_tokens));
        let total = p.zip(c).and_then(|(p, c)| p.checked_add(c));
        match total {
            Some(t) if NanoTon(t).fits_coins() => Ok(NanoTon(t)),
            Some(t) => Err(CoinsOverflow(NanoTon(t))),
            None => Err(CoinsOverflow(NanoTon(u128::MAX))),
        }
    }
}

/// The prices of a worker's signed announcement, as its channel charges them.
impl From<Prices> for Price {
    fn from(p: Prices) -> Price {
        Price {
            per_prompt_token: NanoTon(u128::from(p.prompt.0)),
            per_completion_token: NanoTon(u128::from(p.completion.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::ChannelError;

    #[test]
    fn prompt_and_completion_priced_apart() {
        let price = Price {
            per_prompt_token: NanoTon(10),
            per_completion_token: NanoTon(30),
        };
        let u = Usage {
            prompt_tokens: 7,
            completion_tokens: 5,
        };
        assert_eq!(price.cost(u), Ok(NanoTon(70 + 150)));
        let huge = Price {
            per_prompt_token: NanoTon(1 << 100),
            per_completion_token: NanoTon(0),
        };
        let err = huge
            .cost(Usage {
                prompt_tokens: 1 << 30,
                completion_tokens: 0,
            })
            .unwrap_err();
        assert_eq!(ChannelError::from(err).rule(), "coins-range");
    }
}
