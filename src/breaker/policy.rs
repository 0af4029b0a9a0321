//! What the start of a response means for the breaker.

use crate::Verdict;

/// The decision at the start of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Classified {
    /// The worker answered: stream the body (in a
    /// [`TrackedStream`](crate::TrackedStream)) and let its end decide.
    Track,
    /// Decided already: record this verdict now and send no stream to track.
    Settle(Verdict),
}

/// Classifies the start of a response: its HTTP status, or a send that failed before
/// any status (connect error, timeout).
///
/// The default: 2xx is [`Classified::Track`]; 5xx is a
/// [`Failure`](Verdict::Failure); 429 and the other 4xx are
/// [`Abandoned`](Verdict::Abandoned) (the client's doing, not the worker's: counting
/// them would let bad requests eject healthy workers); a failed send is a `Failure`.
/// Any other status (1xx, 3xx, or outside 100..=599) is a `Failure`: a worker that
/// answers a streaming request with one is not serving. Each class can be changed; a
/// class set to [`Verdict::Success`] counts as a success at once.
///
/// ```
/// use sluice::Verdict;
/// use sluice::breaker::{Classified, StatusPolicy};
///
/// let policy = StatusPolicy::default();
/// assert_eq!(policy.classify(200), Classified::Track);
/// assert_eq!(policy.classify(503), Classified::Settle(Verdict::Failure));
/// assert_eq!(policy.classify(429), Classified::Settle(Verdict::Abandoned));
/// assert_eq!(policy.classify(404), Classified::Settle(Verdict::Abandoned));
/// assert_eq!(policy.classify_send_failure(), Verdict::Failure);
///
/// // A gateway whose workers answer 429 when overloaded may count it against them.
/// let strict = StatusPolicy::default().too_many_requests(Verdict::Failure);
/// assert_eq!(strict.classify(429), Classified::Settle(Verdict::Failure));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusPolicy {
    client_error: Verdict,
    too_many_requests: Verdict,
    server_error: Verdict,
    other: Verdict,
    send_failed: Verdict,
}

impl Default for StatusPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl StatusPolicy {
    /// The default policy (see the type's docs), usable in `const` context.
    pub const fn new() -> Self {
        Self {
            client_error: Verdict::Abandoned,
            too_many_requests: Verdict::Abandoned,
            server_error: Verdict::Failure,
            other: Verdict::Failure,
            send_failed: Verdict::Failure,
        }
    }

    /// The verdict for 4xx other than 429 (default `Abandoned`).
    #[must_use]
    pub const fn client_errors(mut self, verdict: Verdict) -> Self {
        self.client_error = verdict;
        self
    }

    /// The verdict for 429 Too Many Requests (default `Abandoned`).
    #[must_use]
    pub const fn too_many_requests(mut self, verdict: Verdict) -> Self {
        self.too_many_requests = verdict;
        self
    }

    /// The verdict for 5xx (default `Failure`).
    #[must_use]
    pub const fn server_errors(mut self, verdict: Verdict) -> Self {
        self.server_error = verdict;
        self
    }

    /// The verdict for 1xx, 3xx and codes outside 100..=599 (default `Failure`).
    #[must_use]
    pub const fn other_statuses(mut self, verdict: Verdict) -> Self {
        self.other = verdict;
        self
    }

    /// Sets the verdict for a send that failed before any status (default `Failure`);
    /// [`classify_send_failure`](Self::classify_send_failure) reads it back.
    #[must_use]
    pub const fn send_failures(mut self, verdict: Verdict) -> Self {
        self.send_failed = verdict;
        self
    }

    /// Classifies a response by its status code.
    pub const fn classify(&self, status: u16) -> Classified {
        Classified::Settle(match status {
            200..=299 => return Classified::Track,
            429 => self.too_many_requests,
            400..=499 => self.client_error,
            500..=599 => self.server_error,
            _ => self.other,
        })
    }

    /// Classifies a send that failed before any status arrived (connect error,
    /// timeout): the verdict to record, as [`classify`](Self::classify) does for a
    /// status.
    pub const fn classify_send_failure(&self) -> Verdict {
        self.send_failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_classes_at_their_edges() {
        let p = StatusPolicy::default();
        for (status, want) in [
            (199, Classified::Settle(Verdict::Failure)),
            (200, Classified::Track),
            (299, Classified::Track),
            (300, Classified::Settle(Verdict::Failure)),
            (399, Classified::Settle(Verdict::Failure)),
            (400, Classified::Settle(Verdict::Abandoned)),
            (429, Classified::Settle(Verdict::Abandoned)),
            (499, Classified::Settle(Verdict::Abandoned)),
            (500, Classified::Settle(Verdict::Failure)),
            (599, Classified::Settle(Verdict::Failure)),
            (600, Classified::Settle(Verdict::Failure)),
            (0, Classified::Settle(Verdict::Failure)),
        ] {
            assert_eq!(p.classify(status), want, "{status}");
        }
        let custom = p
            .client_errors(Verdict::Failure)
            .server_errors(Verdict::Abandoned)
            .other_statuses(Verdict::Abandoned)
            .send_failures(Verdict::Abandoned);
        assert_eq!(custom.classify(404), Classified::Settle(Verdict::Failure));
        assert_eq!(custom.classify(429), Classified::Settle(Verdict::Abandoned));
        assert_eq!(custom.classify(502), Classified::Settle(Verdict::Abandoned));
        assert_eq!(custom.classify(302), Classified::Settle(Verdict::Abandoned));
        assert_eq!(custom.classify_send_failure(), Verdict::Abandoned);
    }
}
