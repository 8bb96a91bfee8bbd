//! The reconnection policy of a client socket: when to try again, and after how long.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, ErrorKind};

/// Why a connection is over, as a reconnection policy sees it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Ending<'a> {
    /// An open connection ended with this close code (1006 when it was dropped).
    Closed(u16),
    /// An attempt failed before the connection opened.
    Failed(&'a Error),
}

type Predicate = Arc<dyn Fn(&Ending<'_>) -> bool + Send + Sync>;

/// The longest `Retry-After` honoured when `max_delay` is shorter: a server (or a middlebox)
/// cannot park a socket for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// When and how a client socket reconnects ([`ClientOptions::reconnect`](crate::ClientOptions::reconnect)).
///
/// The delay before attempt *n* (from 1) is `initial_delay × factor^(n-1)`, at most
/// `max_delay`, of which a random part up to `jitter` (a fraction) is taken off, so that
/// clients cut off together do not come back together. A 429 or 503 answer's `Retry-After`
/// is waited for when it is longer (up to 5 minutes, or `max_delay` if that is longer). A
/// connection that stayed open for `max_delay` resets the count; one cut sooner does not, so
/// that a server that accepts and drops every connection still meets the backoff and the
/// attempt limit.
///
/// Retried by default ([`Reconnect::retries`]): the close codes 1001, 1006, 1011, 1012, 1013,
/// and attempts that failed for a refused or unreachable server, a DNS failure, a timeout, a
/// handshake cut short, a proxy that is unreachable or fails (not one that refuses with 407
/// or 403), an HTTP 5xx or 429. Not retried: 1000 and every other code (1002, 1007, 1008,
/// 1009, 4000–4999...), other 4xx answers, TLS failures (an untrusted certificate stays
/// untrusted), invalid URLs and redirects that cannot be followed. [`Reconnect::retry_if`] replaces that rule.
///
/// ```
/// use std::time::Duration;
/// use ferrosock::reconnect::{Ending, Reconnect};
/// let policy = Reconnect::default()
///     .initial_delay(Duration::from_millis(200))
///     .max_delay(Duration::from_secs(5))
///     .max_attempts(Some(20))
///     // Also come back after a policy violation, which the application's server uses for
///     // "log in again".
///     .retry_if(|ending| matches!(ending, Ending::Closed(1008)) || Reconnect::retries(ending));
/// ```
#[derive(Clone)]
pub struct Reconnect {
    pub(crate) initial_delay: Duration,
    pub(crate) max_delay: Duration,
    pub(crate) factor: f64,
    pub(crate) jitter: f64,
    pub(crate) max_attempts: Option<u32>,
    retry: Option<Predicate>,
}

impl Default for Reconnect {
    /// 0.5 s, doubled at each attempt up to 30 s, with 20 % jitter, attempted forever.
    fn default() -> Reconnect {
        Reconnect {
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            factor: 2.0,
            jitter: 0.2,
            max_attempts: None,
            retry: None,
        }
    }
}

impl fmt::Debug for Reconnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reconnect")
            .field("initial_delay", &self.initial_delay)
            .field("max_delay", &self.max_delay)
            .field("factor", &self.factor)
            .field("jitter", &self.jitter)
            .field("max_attempts", &self.max_attempts)
            .field("retry_if", &self.retry.as_ref().map(|_| "custom"))
            .finish()
    }
}

impl Reconnect {
    /// The delay before the first attempt (default 0.5 s).
    pub fn initial_delay(mut self, delay: Duration) -> Reconnect {
        self.initial_delay = delay;
        self
    }

    /// The longest delay between attempts (default 30 s).
    pub fn max_delay(mut self, delay: Duration) -> Reconnect {
        self.max_delay = delay;
        self
    }

    /// What each delay is multiplied by (default 2; at least 1).
    pub fn factor(mut self, factor: f64) -> Reconnect {
        self.factor = if factor.is_finite() {
            factor.max(1.0)
        } else {
            1.0
        };
        self
    }

    /// The fraction of each delay taken off at random, from 0 (none) to 1 (default 0.2).
    pub fn jitter(mut self, jitter: f64) -> Reconnect {
        self.jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// How many attempts are made after a connection ends (or a first attempt fails) before
    /// the socket gives up: `Some(2)` tries twice more, then stops. `None` (the default)
    /// tries forever, until [`WebSocket::terminate`](crate::WebSocket::terminate).
    pub fn max_attempts(mut self, attempts: Option<u32>) -> Reconnect {
        self.max_attempts = attempts;
        self
    }

    /// Decides with `retry` instead of [`Reconnect::retries`] which endings are retried.
    pub fn retry_if(
        mut self,
        retry: impl Fn(&Ending<'_>) -> bool + Send + Sync + 'static,
    ) -> Reconnect {
        self.retry = Some(Arc::new(retry));
        self
    }

    /// The default rule: see the type's docs.
    pub fn retries(ending: &Ending<'_>) -> bool {
        match ending {
            Ending::Closed(code) => matches!(code, 1001 | 1006 | 1011 | 1012 | 1013),
            Ending::Failed(err) => match err.kind() {
                ErrorKind::Handshake => match err.http_status() {
                    Some(status) => status >= 500 || status == 429,
                    // A broken answer: maybe a server restarting.
                    None => true,
                },
                ErrorKind::Dns | ErrorKind::Connect | ErrorKind::Timeout | ErrorKind::Io => true,
                // Unreachable, or a failed tunnel; a refusal (407, 403) stands.
                ErrorKind::Proxy => err.http_status().is_none_or(|status| status >= 500),
                _ => false,
            },
        }
    }

    /// Whether this ending is retried.
    pub(crate) fn wants(&self, ending: &Ending<'_>) -> bool {
        match &self.retry {
            Some(retry) => retry(ending),
            None => Reconnect::retries(ending),
        }
    }

    /// How long a connection must stay open to reset the count of attempts.
    pub(crate) fn stable_after(&self) -> Duration {
        self.max_delay
    }

    /// The delay before attempt `attempt` (from 1), `retry_after` being what the server asked.
    pub(crate) fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let base = self.initial_delay.as_secs_f64() * self.factor.powi(exponent);
        let base = base.min(self.max_delay.as_secs_f64());
        let taken_off = base * self.jitter * rand::random::<f64>();
        // `max_delay(Duration::MAX)` means no cap: saturate rather than overflow.
        let delay =
            Duration::try_from_secs_f64((base - taken_off).max(0.0)).unwrap_or(Duration::MAX);
        let ceiling = self.max_delay.max(MAX_RETRY_AFTER);
        delay.max(retry_after.unwrap_or_default().min(ceiling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delays_grow_to_the_maximum() {
        let policy = Reconnect::default()
            .initial_delay(Duration::from_millis(100))
            .max_delay(Duration::from_secs(1))
            .jitter(0.0);
        let delays: Vec<u128> = (1..=6).map(|n| policy.delay(n, None).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        let jittered = Reconnect::default()
            .initial_delay(Duration::from_secs(1))
            .jitter(0.5);
        for _ in 0..100 {
            let delay = jittered.delay(1, None);
            assert!(delay >= Duration::from_millis(500) && delay <= Duration::from_secs(1));
        }
        assert!(policy.delay(u32::MAX, None) <= Duration::from_secs(1));
        // Retry-After is capped; no cap at all does not overflow.
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(86_400))),
            Duration::from_secs(300)
        );
        let uncapped = Reconnect::default().max_delay(Duration::MAX).jitter(0.0);
        assert!(uncapped.delay(200, None) > Duration::from_secs(100 * 365 * 86_400));
    }

    #[test]
    fn what_is_retried() {
        let policy = Reconnect::default();
        for code in [1001, 1006, 1011, 1012, 1013] {
            assert!(policy.wants(&Ending::Closed(code)), "{code}");
        }
        for code in [1000, 1002, 1003, 1007, 1008, 1009, 1010, 4000, 4999, 3000] {
            assert!(!policy.wants(&Ending::Closed(code)), "{code}");
        }
        let refused = |status| Error::new(ErrorKind::Handshake, "refused").with_status(status);
        for (status, retried) in [
            (500, true),
            (503, true),
            (429, true),
            (403, false),
            (404, false),
            (400, false),
        ] {
            assert_eq!(
                policy.wants(&Ending::Failed(&refused(status))),
                retried,
                "{status}"
            );
        }
        for (kind, retried) in [
            (ErrorKind::Connect, true),
            (ErrorKind::Dns, true),
            (ErrorKind::Timeout, true),
            (ErrorKind::InvalidUrl, false),
            (ErrorKind::Redirect, false),
        ] {
            assert_eq!(
                policy.wants(&Ending::Failed(&Error::new(kind, "x"))),
                retried,
                "{kind:?}"
            );
        }
        let custom = Reconnect::default().retry_if(|e| matches!(e, Ending::Closed(4000)));
        assert!(custom.wants(&Ending::Closed(4000)));
        assert!(!custom.wants(&Ending::Closed(1006)));
    }
}
