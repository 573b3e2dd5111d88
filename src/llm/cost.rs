//! Money of LLM calls in integer micro-units of the currency (no floats):
//! prices are micro-units per million tokens, a call's cost is the sum of
//! tokens x price over its token kinds divided by a million, rounded up
//! once. Two conventions for cached input (a price row says which):
//! OpenAI counts cached tokens inside the prompt tokens (a subset: the
//! uncached part is prompt - cached_read - cache_write); Anthropic counts
//! cache reads and cache writes apart from the input tokens. Reasoning
//! tokens are part of the completion tokens (billed once, at the output
//! price). Pure Rust.

use crate::error::{ErrorKind, SaasError, SaasResult};

/// One price version (micro-units per million tokens).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Price {
    pub input: i64,
    pub cached_input: i64,
    pub cache_write: i64,
    pub output: i64,
    /// Cached-read and cache-write tokens are counted inside prompt tokens.
    pub cached_subset: bool,
}

/// The tokens of one call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    pub prompt: i64,
    pub cached_read: i64,
    pub cache_write: i64,
    pub completion: i64,
    pub reasoning: i64,
}

fn bad(msg: String, hint: &str) -> SaasError {
    SaasError::new(ErrorKind::OutOfRange, msg, hint)
}

impl Tokens {
    /// Refuses negative counts and counts the convention cannot hold.
    pub fn check(&self, cached_subset: bool) -> SaasResult<()> {
        for (name, v) in [
            ("prompt_tokens", self.prompt),
            ("cached_read_tokens", self.cached_read),
            ("cache_write_tokens", self.cache_write),
            ("completion_tokens", self.completion),
            ("reasoning_tokens", self.reasoning),
        ] {
            if v < 0 {
                return Err(bad(
                    format!("{name} must not be negative, got {v}"),
                    "Pass the token counts the provider reported (0 when there were none).",
                ));
            }
        }
        if self.reasoning > self.completion {
            return Err(bad(
                format!(
                    "reasoning_tokens ({}) exceed completion_tokens ({})",
                    self.reasoning, self.completion
                ),
                "Reasoning tokens are part of the completion tokens (OpenAI's completion_tokens_details.reasoning_tokens).",
            ));
        }
        if cached_subset && self.cached_read.saturating_add(self.cache_write) > self.prompt {
            return Err(bad(
                format!(
                    "cached tokens ({} read + {} written) exceed prompt_tokens ({}) under a price whose cached tokens are part of the prompt",
                    self.cached_read, self.cache_write, self.prompt
                ),
                "With this provider's convention prompt_tokens include cached tokens (OpenAI's prompt_tokens_details.cached_tokens).",
            ));
        }
        Ok(())
    }
}

impl Price {
    pub fn check(&self) -> SaasResult<()> {
        for (name, v) in [
            ("input", self.input),
            ("cached_input", self.cached_input),
            ("cache_write", self.cache_write),
            ("output", self.output),
        ] {
            if v < 0 {
                return Err(bad(
                    format!("price {name} must not be negative, got {v}"),
                    "Prices are micro-units of the currency per million tokens, e.g. 2500000 for $2.50.",
                ));
            }
        }
        Ok(())
    }
}

fn round_up(total: i128) -> SaasResult<i64> {
    let micros = (total + 999_999) / 1_000_000;
    i64::try_from(micros).map_err(|_| {
        bad(
            "the cost of this call does not fit in a bigint of micro-units".into(),
            "Check the token counts and prices: they are far beyond any real call.",
        )
    })
}

/// The cost of a call in micro-units, rounded up.
pub fn cost_micros(price: &Price, t: &Tokens) -> SaasResult<i64> {
    price.check()?;
    t.check(price.cached_subset)?;
    let uncached = if price.cached_subset {
        t.prompt - t.cached_read - t.cache_write
    } else {
        t.prompt
    };
    let total = uncached as i128 * price.input as i128
        + t.cached_read as i128 * price.cached_input as i128
        + t.cache_write as i128 * price.cache_write as i128
        + t.completion as i128 * price.output as i128;
    round_up(total)
}

/// The worst case of a call not yet made: every prompt token at the full
/// input price, and `max_output` tokens at the output price.
pub fn worst_case_micros(price: &Price, prompt: i64, max_output: i64) -> SaasResult<i64> {
    cost_micros(
        &Price {
            cached_subset: true,
            ..*price
        },
        &Tokens {
            prompt,
            completion: max_output,
            ..Tokens::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GPT4O: Price = Price {
        input: 2_500_000,
        cached_input: 1_250_000,
        cache_write: 2_500_000,
        output: 10_000_000,
        cached_subset: true,
    };
    const SONNET: Price = Price {
        input: 3_000_000,
        cached_input: 300_000,
        cache_write: 3_750_000,
        output: 15_000_000,
        cached_subset: false,
    };

    #[test]
    fn openai_cached_tokens_are_inside_prompt_tokens() {
        // 1000 prompt tokens, 800 of them cached; 100 output.
        let t = Tokens {
            prompt: 1000,
            cached_read: 800,
            completion: 100,
            ..Default::default()
        };
        // 200*2.5 + 800*1.25 + 100*10 = 500 + 1000 + 1000 = 2500 micro-dollars
        assert_eq!(cost_micros(&GPT4O, &t).unwrap(), 2500);
    }

    #[test]
    fn anthropic_counts_cache_reads_and_writes_apart() {
        let t = Tokens {
            prompt: 100,
            cached_read: 1000,
            cache_write: 2000,
            completion: 10,
            ..Default::default()
        };
        // 100*3 + 1000*0.3 + 2000*3.75 + 10*15 = 300 + 300 + 7500 + 150
        assert_eq!(cost_micros(&SONNET, &t).unwrap(), 8250);
    }

    #[test]
    fn rounds_up_once() {
        let t = Tokens {
            prompt: 1,
            ..Default::default()
        };
        assert_eq!(cost_micros(&GPT4O, &t).unwrap(), 3); // 2.5 -> 3
        assert_eq!(cost_micros(&GPT4O, &Tokens::default()).unwrap(), 0);
    }

    #[test]
    fn refusals() {
        let neg = Tokens {
            prompt: -1,
            ..Default::default()
        };
        assert_eq!(
            cost_micros(&GPT4O, &neg).unwrap_err().kind,
            ErrorKind::OutOfRange
        );
        let over = Tokens {
            prompt: 10,
            cached_read: 11,
            ..Default::default()
        };
        assert!(cost_micros(&GPT4O, &over).is_err());
        assert!(cost_micros(&SONNET, &over).is_ok());
        let huge = Tokens {
            prompt: i64::MAX,
            completion: i64::MAX,
            ..Default::default()
        };
        assert!(cost_micros(&GPT4O, &huge).is_err());
    }

    proptest! {
        #[test]
        fn worst_case_bounds_the_actual(prompt in 0i64..10_000_000, cached in 0i64..10_000_000,
                                        max_out in 0i64..1_000_000, out in 0i64..1_000_000) {
            prop_assume!(cached <= prompt && out <= max_out);
            let t = Tokens { prompt, cached_read: cached, completion: out, ..Default::default() };
            prop_assert!(cost_micros(&GPT4O, &t).unwrap() <= worst_case_micros(&GPT4O, prompt, max_out).unwrap());
        }

        #[test]
        fn cost_is_monotone(a in 0i64..1_000_000, b in 0i64..1_000_000) {
            let t1 = Tokens { prompt: a, completion: b, ..Default::default() };
            let t2 = Tokens { prompt: a + 1, completion: b, ..Default::default() };
            prop_assert!(cost_micros(&SONNET, &t1).unwrap() <= cost_micros(&SONNET, &t2).unwrap());
        }

        #[test]
        fn exact_when_divisible(a in 0i64..1_000_000) {
            let p = Price { input: 1_000_000, cached_input: 0, cache_write: 0, output: 0, cached_subset: true };
            prop_assert_eq!(cost_micros(&p, &Tokens { prompt: a, ..Default::default() }).unwrap(), a);
        }
    }
}
