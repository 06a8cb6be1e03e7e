//! Per-customer rate limits on the endpoints that create state (orders, holds), with
//! governor's GCRA. A customer is told apart by its `customer_id`, never by its address: behind
//! compose's port proxy (or any load balancer) every client shares one, and one client's
//! flood must not throttle everyone.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::{ApiError, CustomerId, ServerConfig};

/// Checks between two sweeps of customers whose limit state has returned to fresh.
const SWEEP_EVERY: u32 = 4096;

#[derive(Debug)]
pub struct CustomerRate {
    limiter: DefaultKeyedRateLimiter<CustomerId>,
    checks: AtomicU32,
    rate: u32,
}

impl CustomerRate {
    /// `CTR_CUSTOMER_RATE` per second on average, `CTR_CUSTOMER_BURST` at once.
    pub fn new(config: &ServerConfig) -> Self {
        let rate = NonZeroU32::new(config.customer_rate).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.customer_burst).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            checks: AtomicU32::new(0),
            rate: rate.get(),
        }
    }

    /// Counts one request of `customer`; over the limit, a 429 `rate-limited` with the seconds
    /// until the next one is allowed.
    pub fn check(&self, customer: &CustomerId) -> Result<(), ApiError> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            // Memory stays bounded when ids are made up: forget customers back to fresh.
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter.check_key(customer).map_err(|not_until| {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                ApiError::too_many(
                    "rate-limited",
                    format!(
                        "this customer is over its limit of {} requests a second here; retry after the time in `Retry-After`",
                        self.rate
                    ),
                    wait.as_secs_f64().ceil() as u64,
                )
            })
    }
}
