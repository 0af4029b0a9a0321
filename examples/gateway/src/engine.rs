//! Engine profiles: what the gateway does, beyond closing the connection, to stop an
//! engine from generating for a client that has left.
//!
//! Closing the upstream connection is the gateway's one universal signal, and sluice
//! does it the moment a client leaves (SPEC section 4). Whether the engine *acts* on
//! it is the engine's business:
//!
//! * **vLLM** and **TGI** abort a request when its connection closes: the
//!   [`Generic`](Engine::Generic) profile is enough.
//! * **llama.cpp** (`llama-server`) and **Ollama** stop on a close in current
//!   releases, but both have shipped releases that kept decoding after the client was
//!   gone. The generic profile is what they support; watch the engine's own metrics
//!   (`llamacpp:requests_processing`) to see that a close stops it (the gateway's
//!   `real_engine` test does exactly that).
//! * **SGLang** stops reliably only when asked: its own disconnect path has left
//!   "zombie" generations decoding to `max_tokens` for clients long gone in several
//!   releases (sglang issues #36333, #36876), and its router now calls
//!   `POST /abort_request` with the request's `rid` when a client disconnects (sglang
//!   PR #39461). The [`Sglang`](Engine::Sglang) profile does the same.
//!
//! | profile | request | on an Abandoned request that reached the engine |
//! |---|---|---|
//! | `generic` (default) | passed on as it is | nothing beyond closing the connection |
//! | `sglang` | a minted `rid` is put into the JSON body (see [`with_rid`] for when it is not) | `POST {upstream}/abort_request` with `{"rid": ...}`, once, from a spawned task bounded by [`ABORT_TIMEOUT`] |
//!
//! The abort never blocks the client's path (it runs in its own task after the
//! verdict), never touches the worker's breaker (an engine that cannot abort is not a
//! failing worker for the requests it serves), and is counted in
//! `sluice_aborts_total{worker,result}`.

use std::fmt;
use std::time::Duration;

/// How long an explicit abort may take before it is given up (and counted as
/// `timeout`).
pub const ABORT_TIMEOUT: Duration = Duration::from_secs(2);

/// The path of SGLang's abort endpoint, appended to the worker's base URL.
pub const SGLANG_ABORT_PATH: &str = "/abort_request";

/// An engine profile (`serve --engine`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
#[non_exhaustive]
pub enum Engine {
    /// Any OpenAI-compatible engine that stops generating when its connection closes
    /// (vLLM, TGI, current llama.cpp and Ollama): nothing extra.
    #[default]
    Generic,
    /// SGLang: a request id (`rid`) in each request's JSON body, and
    /// `POST /abort_request {"rid": ...}` when a request is abandoned after it
    /// reached the engine.
    Sglang,
}

impl Engine {
    /// Whether this profile sends explicit aborts.
    pub const fn aborts(self) -> bool {
        matches!(self, Self::Sglang)
    }

    /// The profile's name, as `--engine` takes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Generic => "generic",
            Self::Sglang => "sglang",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Puts the minted `rid` into a JSON object body. Returns the body to send and the
/// rid to abort by, or `None` (the body is passed on unchanged and the request is
/// never aborted explicitly) when the body is not a JSON object, when the client set
/// a `rid` of its own (SGLang matches abort ids by prefix, so aborting by an id the
/// gateway did not mint could cancel someone else's request: the client's id is kept
/// and the request is left alone, as SGLang's router does), or when the request asks
/// for more than one sample (`n > 1`: the engine gives each sample its own id).
pub fn with_rid(body: &[u8], rid: &str) -> Option<(Vec<u8>, String)> {
    let Ok(serde_json::Value::Object(mut object)) = serde_json::from_slice(body) else {
        return None;
    };
    if object.contains_key("rid") {
        return None;
    }
    if object
        .get("n")
        .and_then(serde_json::Value::as_u64)
        .is_some_and(|n| n > 1)
    {
        return None;
    }
    object.insert("rid".to_owned(), rid.into());
    let bytes = serde_json::to_vec(&object).ok()?;
    Some((bytes, rid.to_owned()))
}

/// Mints request ids for the engine: 32 lowercase hex digits, a per-gateway prefix
/// and a counter, so no id is a prefix of another (SGLang matches aborts by prefix).
#[derive(Debug)]
pub struct RidMinter {
    prefix: u64,
    next: std::sync::atomic::AtomicU64,
}

impl Default for RidMinter {
    fn default() -> Self {
        Self::new()
    }
}

impl RidMinter {
    /// A minter whose prefix differs between gateway processes (it mixes the start
    /// time and the process id).
    pub fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let prefix = nanos.rotate_left(17)
            ^ u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Self {
            prefix,
            next: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The next id.
    pub fn mint(&self) -> String {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{:016x}{n:016x}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rid_goes_into_json_objects_only() {
        let (body, rid) = with_rid(br#"{"stream":true}"#, "gw-1").expect("rewritten");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["rid"], "gw-1");
        assert_eq!(body["stream"], true);
        assert_eq!(rid, "gw-1");

        assert_eq!(with_rid(br#"{"rid":"mine"}"#, "gw-2"), None);
        assert_eq!(with_rid(br#"{"n":2}"#, "gw-3"), None);
        assert!(with_rid(br#"{"n":1}"#, "gw-3").is_some());
        assert_eq!(with_rid(b"[1,2]", "gw-4"), None);
        assert_eq!(with_rid(b"not json", "gw-5"), None);
    }

    #[test]
    fn minted_ids_are_fixed_width_and_distinct() {
        let minter = RidMinter::new();
        let (a, b) = (minter.mint(), minter.mint());
        assert_eq!((a.len(), b.len()), (32, 32));
        assert_ne!(a, b);
        assert!(!b.starts_with(&a));
    }
}
