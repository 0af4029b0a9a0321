//! What a gRPC status means for the breaker.

use http::HeaderMap;
use sluice::Verdict;

/// The number of status codes gRPC defines (0 `OK` to 16 `UNAUTHENTICATED`).
const CODES: usize = 17;

/// Classifies a gRPC response by its status code (the `grpc-status` trailer, or the
/// header of a trailers-only response).
///
/// `0` (`OK`) is a [`Success`](Verdict::Success). The default classes of the other
/// codes follow one question, as [`StatusPolicy`](sluice::breaker::StatusPolicy) does
/// for HTTP: would another, healthy worker have answered the same? If so the code says
/// nothing about this worker, and it is [`Abandoned`](Verdict::Abandoned) (counted
/// nowhere, permit freed); if not, it is the worker's fault, a
/// [`Failure`](Verdict::Failure).
///
/// | code | name | default |
/// |---|---|---|
/// | 0 | `OK` | Success |
/// | 1 | `CANCELLED` | Abandoned (the caller gave up) |
/// | 2 | `UNKNOWN` | Failure |
/// | 3 | `INVALID_ARGUMENT` | Abandoned (a bad request) |
/// | 4 | `DEADLINE_EXCEEDED` | Failure (the worker was too slow) |
/// | 5 | `NOT_FOUND` | Abandoned |
/// | 6 | `ALREADY_EXISTS` | Abandoned |
/// | 7 | `PERMISSION_DENIED` | Abandoned |
/// | 8 | `RESOURCE_EXHAUSTED` | Abandoned (like HTTP 429: quota or rate limit) |
/// | 9 | `FAILED_PRECONDITION` | Abandoned |
/// | 10 | `ABORTED` | Abandoned (a conflict the caller retries) |
/// | 11 | `OUT_OF_RANGE` | Abandoned |
/// | 12 | `UNIMPLEMENTED` | Abandoned (the request names a method the service lacks; every worker of one pool answers alike) |
/// | 13 | `INTERNAL` | Failure |
/// | 14 | `UNAVAILABLE` | Failure |
/// | 15 | `DATA_LOSS` | Failure |
/// | 16 | `UNAUTHENTICATED` | Abandoned |
/// | 17 and above, or not a number | (undefined) | as `UNKNOWN`: Failure |
///
/// A pool whose workers may run different versions can count `UNIMPLEMENTED` against
/// the worker with `.code(12, Verdict::Failure)`; one whose workers answer
/// `RESOURCE_EXHAUSTED` when overloaded, `.code(8, Verdict::Failure)`.
///
/// ```
/// use sluice::Verdict;
/// use sluice_http::GrpcPolicy;
///
/// let policy = GrpcPolicy::default();
/// assert_eq!(policy.classify(0), Verdict::Success);
/// assert_eq!(policy.classify(14), Verdict::Failure); // UNAVAILABLE
/// assert_eq!(policy.classify(3), Verdict::Abandoned); // INVALID_ARGUMENT
/// assert_eq!(policy.classify(99), Verdict::Failure); // undefined: as UNKNOWN
///
/// let strict = policy.code(8, Verdict::Failure); // RESOURCE_EXHAUSTED
/// assert_eq!(strict.classify(8), Verdict::Failure);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GrpcPolicy {
    codes: [Verdict; CODES],
}

impl Default for GrpcPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcPolicy {
    /// The default policy (see the type's docs), usable in `const` context.
    pub const fn new() -> Self {
        use Verdict::{Abandoned as A, Failure as F, Success as S};
        Self {
            codes: [S, A, F, A, F, A, A, A, A, A, A, A, A, F, F, F, A],
        }
    }

    /// Sets the verdict for status `code`. Codes 17 and above are not defined by gRPC
    /// and are read as `UNKNOWN` (2): setting one of them sets `UNKNOWN`'s class.
    #[must_use]
    pub const fn code(mut self, code: u32, verdict: Verdict) -> Self {
        self.codes[index(code)] = verdict;
        self
    }

    /// The verdict for status `code`.
    pub const fn classify(&self, code: u32) -> Verdict {
        self.codes[index(code)]
    }

    /// The verdict for a `grpc-status` value as sent (ASCII digits). A value that is
    /// not a number is read as `UNKNOWN` (2).
    pub fn classify_value(&self, value: &[u8]) -> Verdict {
        self.classify(parse(value))
    }

    /// The verdict for the `grpc-status` in `headers` (trailers, or the headers of a
    /// trailers-only response); `None` when there is none.
    pub fn classify_headers(&self, headers: &HeaderMap) -> Option<Verdict> {
        let value = headers.get(GRPC_STATUS)?;
        Some(self.classify_value(value.as_bytes()))
    }
}

/// The header (and trailer) that carries a gRPC status.
pub(crate) const GRPC_STATUS: &str = "grpc-status";

const UNKNOWN: u32 = 2;

const fn index(code: u32) -> usize {
    if code < CODES as u32 {
        code as usize
    } else {
        UNKNOWN as usize
    }
}

/// A `grpc-status` value: 1 to 3 ASCII digits (anything else is `UNKNOWN`).
fn parse(value: &[u8]) -> u32 {
    if value.is_empty() || value.len() > 3 {
        return UNKNOWN;
    }
    let mut code = 0;
    for &b in value {
        if !b.is_ascii_digit() {
            return UNKNOWN;
        }
        code = code * 10 + u32::from(b - b'0');
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_or_read_as_unknown() {
        let p = GrpcPolicy::default();
        for (value, want) in [
            (&b"0"[..], Verdict::Success),
            (b"00", Verdict::Success),
            (b"1", Verdict::Abandoned),
            (b"14", Verdict::Failure),
            (b"16", Verdict::Abandoned),
            (b"17", Verdict::Failure),
            (b"999", Verdict::Failure),
            (b"1000", Verdict::Failure),
            (b"", Verdict::Failure),
            (b" 0", Verdict::Failure),
            (b"-1", Verdict::Failure),
            (b"ok", Verdict::Failure),
        ] {
            assert_eq!(p.classify_value(value), want, "{value:?}");
        }
    }

    #[test]
    fn each_code_has_its_documented_class() {
        let p = GrpcPolicy::default();
        let failures = [2, 4, 13, 14, 15];
        for code in 1..17 {
            let want = match failures.contains(&code) {
                true => Verdict::Failure,
                false => Verdict::Abandoned,
            };
            assert_eq!(p.classify(code), want, "{code}");
        }
        let changed = p.code(12, Verdict::Failure).code(40, Verdict::Abandoned);
        assert_eq!(changed.classify(12), Verdict::Failure);
        assert_eq!(changed.classify(2), Verdict::Abandoned);
        assert_eq!(changed.classify(u32::MAX), Verdict::Abandoned);
        let mut headers = HeaderMap::new();
        assert_eq!(p.classify_headers(&headers), None);
        headers.insert(GRPC_STATUS, http::HeaderValue::from_static("14"));
        assert_eq!(p.classify_headers(&headers), Some(Verdict::Failure));
    }
}
