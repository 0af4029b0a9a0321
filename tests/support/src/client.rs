//! The client's side: reading a gateway's SSE body.

use core::marker::PhantomData;
use core::pin::Pin;

use bytes::Bytes;
use futures_lite::{Stream, StreamExt};

use crate::{Clock, within};

/// A body stream whose error is only "the body broke".
type Body = Pin<Box<dyn Stream<Item = Result<Bytes, ()>> + Send>>;

/// Reads a client's body as SSE text; dropping it closes the client's connection.
pub struct Reader<C> {
    body: Body,
    /// The response's status.
    pub status: u16,
    /// Everything read so far.
    pub text: String,
    clock: PhantomData<fn() -> C>,
}

impl<C> core::fmt::Debug for Reader<C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Reader")
            .field("status", &self.status)
            .field("text", &self.text)
            .finish_non_exhaustive()
    }
}

/// How a body read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// The body ended cleanly.
    Clean,
    /// The body ended with an error (the connection was aborted).
    Error,
}

impl<C: Clock> Reader<C> {
    /// A reader of `body`, a response with `status`.
    pub fn new<S, E>(status: u16, body: S) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    {
        Self {
            body: Box::pin(body.map(|chunk| chunk.map_err(drop))),
            status,
            text: String::new(),
            clock: PhantomData,
        }
    }

    /// Tokens (not `[DONE]`) read so far.
    pub fn tokens(&self) -> usize {
        self.text.matches("data: {").count()
    }

    /// Whether `[DONE]` was read.
    pub fn done(&self) -> bool {
        self.text.contains("data: [DONE]\n\n")
    }

    /// Reads until `pred` holds; `Err` if the body ends first.
    pub async fn until(&mut self, mut pred: impl FnMut(&Self) -> bool) -> Result<(), BodyEnd> {
        while !pred(self) {
            match within::<C, _>("body chunk", self.body.next()).await {
                Some(Ok(chunk)) => self
                    .text
                    .push_str(std::str::from_utf8(&chunk).expect("utf-8")),
                Some(Err(())) => return Err(BodyEnd::Error),
                None => return Err(BodyEnd::Clean),
            }
        }
        Ok(())
    }

    /// Reads to the end of the body.
    pub async fn read_to_end(&mut self) -> BodyEnd {
        match self.until(|_| false).await {
            Err(end) => end,
            Ok(()) => unreachable!("`until` holds only at the end"),
        }
    }
}
