//! The one reference model of the commit point (SPEC section 6) for the attempt
//! tests of the core (`tests/attempt.rs`, over a stream) and of `sluice-http`
//! (`adapters/http/tests/attempt_body.rs`, over a body): what an attempt does with a
//! scripted worker's answer before the client sees a byte, written from the rules,
//! never from the code.

use sluice::Cause;
use sluice::attempt::Commit;

/// One item or frame a scripted worker sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// The OpenAI role chunk: preamble, not progress.
    Role,
    /// A keep-alive comment.
    Ping,
    /// A token: progress.
    Token,
    /// An in-band error object: Failure.
    ErrorObject,
    /// An error item or frame (a broken connection): Failure.
    ErrorItem,
    /// `data: [DONE]`: Success.
    Done,
    /// One gRPC message.
    Message,
    /// A trailers frame with this `grpc-status`: the end of the body.
    Trailers(u8),
}

impl Piece {
    /// The bytes of a data piece; none for an error or trailers.
    pub fn bytes(self) -> &'static [u8] {
        match self {
            Self::Role => b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
            Self::Ping => b": ping\n\n",
            Self::Token => b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n",
            Self::ErrorObject => b"data: {\"error\":{\"message\":\"boom\"}}\n\n",
            Self::Done => b"data: [DONE]\n\n",
            Self::Message => b"\0\0\0\0\x05token",
            Self::ErrorItem | Self::Trailers(_) => b"",
        }
    }
}

/// The two ways a gateway holds an attempt back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A streamed SSE answer (`openai_chat`), committed on its first token.
    Sse,
    /// A unary gRPC answer, held whole to its trailers (the default policy).
    GrpcWhole,
}

/// What the rules say an attempt does before the client sees a byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// It commits, for this reason.
    Commit(Commit),
    /// It fails with this cause (recorded as a Failure).
    Fail(Cause),
}

/// What an attempt held back in `mode`, at most about `limit` bytes (the piece that
/// reaches or crosses it is kept, and commits), does with `script`.
pub fn expect(mode: Mode, script: &[Piece], limit: usize) -> Expect {
    let mut held = 0;
    for piece in script {
        match (mode, piece) {
            (_, Piece::ErrorItem) => return Expect::Fail(Cause::ErrorItem),
            (Mode::Sse, Piece::ErrorObject) => return Expect::Fail(Cause::ErrorEvent),
            (Mode::Sse, Piece::Token) => return Expect::Commit(Commit::Progress),
            (Mode::Sse, Piece::Done) => return Expect::Commit(Commit::End),
            // Trailers end an SSE stream before its `[DONE]`.
            (Mode::Sse, Piece::Trailers(_)) => return Expect::Fail(Cause::Truncated),
            // OK, and the caller's own codes (INVALID_ARGUMENT): its answer, passed on.
            (Mode::GrpcWhole, Piece::Trailers(0 | 3)) => return Expect::Commit(Commit::End),
            (Mode::GrpcWhole, Piece::Trailers(_)) => return Expect::Fail(Cause::GrpcStatus),
            _ => {}
        }
        held += piece.bytes().len();
        if held >= limit {
            return Expect::Commit(Commit::Bound);
        }
    }
    // The end, without the `[DONE]` the chat rules require or the gRPC trailers.
    Expect::Fail(Cause::Truncated)
}
