//! Metering an inference session against a channel: which tokens a forward is charged
//! as, the default credit window, and the client's checks on a worker's terms and
//! receipts. Both ends (and the simulator) apply these same rules, so the worker's count
//! and the client's agree token for token.
//!
//! The charge of a forward depends on its shape alone, which both ends see: a forward of
//! two or more rows is prompt processing (prefill, or a failover's replay), a one-row
//! forward is one completion token. A one-token prompt is thus charged as a completion.

use super::error::ChannelError;
use super::pricing::{Price, Usage};
use super::units::NanoTon;

/// Prompt tokens the default credit window covers: a whole long prompt is served before
/// its first payment can arrive (the client pays after each result).
pub const CREDIT_PROMPT_TOKENS: u64 = 4096;
/// Completion tokens the default credit window covers beyond the prompt.
pub const CREDIT_COMPLETION_TOKENS: u64 = 64;

/// The tokens a forward of `n_tokens` rows is charged as.
pub fn forward_usage(n_tokens: u32) -> Usage {
    match n_tokens {
        0 => Usage::default(),
        1 => Usage {
            prompt_tokens: 0,
            completion_tokens: 1,
        },
        n => Usage {
            prompt_tokens: u64::from(n),
            completion_tokens: 0,
        },
    }
}

/// The credit window a worker charging `price` offers by default: the cost of
/// [`CREDIT_PROMPT_TOKENS`] prompt and [`CREDIT_COMPLETION_TOKENS`] completion tokens.
pub fn default_credit_window(price: &Price) -> Result<NanoTon, ChannelError> {
    Ok(price.cost(Usage {
        prompt_tokens: CREDIT_PROMPT_TOKENS,
        completion_tokens: CREDIT_COMPLETION_TOKENS,
    })?)
}

/// The client's check of a worker's session terms against its signed announcement.
pub fn check_terms(announced: &Price, offered: &Price) -> Result<(), ChannelError> {
    if announced != offered {
        return Err(ChannelError::TermsDiffer {
            announced: *announced,
            offered: *offered,
        });
    }
    Ok(())
}

/// The client's check of a receipt: the forward of `n_tokens` rows must be charged as
/// [`forward_usage`] says.
pub fn check_receipt(n_tokens: u32, charged: Usage) -> Result<(), ChannelError> {
    let expected = forward_usage(n_tokens);
    if charged != expected {
        return Err(ChannelError::ReceiptMismatch { expected, charged });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(p: u128, c: u128) -> Price {
        Price {
            per_prompt_token: NanoTon(p),
            per_completion_token: NanoTon(c),
        }
    }

    #[test]
    fn forwards_are_charged_by_shape() {
        assert_eq!(forward_usage(0), Usage::default());
        assert_eq!(forward_usage(1).completion_tokens, 1);
        assert_eq!(forward_usage(1).prompt_tokens, 0);
        assert_eq!(forward_usage(7).prompt_tokens, 7);
        assert_eq!(forward_usage(7).completion_tokens, 0);
    }

    #[test]
    fn default_window_covers_a_long_prompt_and_some_completion() {
        let w = default_credit_window(&price(1_000, 2_000)).unwrap();
        assert_eq!(w, NanoTon(4096 * 1_000 + 64 * 2_000));
        assert!(default_credit_window(&price(u128::MAX / 2, 1)).is_err());
    }

    #[test]
    fn terms_must_equal_the_announcement() {
        check_terms(&price(1, 2), &price(1, 2)).unwrap();
        let e = check_terms(&price(1, 2), &price(1, 3)).unwrap_err();
        assert_eq!(e.rule(), "announced-terms");
    }

    #[test]
    fn receipts_must_charge_the_forward_shape() {
        check_receipt(5, forward_usage(5)).unwrap();
        let over = Usage {
            prompt_tokens: 6,
            completion_tokens: 0,
        };
        assert_eq!(
            check_receipt(5, over).unwrap_err().rule(),
            "receipt-matches"
        );
        // A one-token forward charged at the (dearer) completion price only.
        let as_prompt = Usage {
            prompt_tokens: 1,
            completion_tokens: 0,
        };
        assert!(check_receipt(1, as_prompt).is_err());
    }
}
