//! Compile-time check: the adapter's futures are `Send` when their inputs are.

use std::io;

use bytes::Bytes;
use futures_lite::stream;
use sluice::forward::ForwardOptions;
use sluice::{Outcome, TrackedStream};

fn assert_send<T: Send>(_: &T) {}

#[test]
fn forward_futures_are_send() {
    let (tx, _rx) = async_channel::bounded::<Result<Bytes, io::Error>>(1);
    let upstream =
        || TrackedStream::new(stream::empty::<Result<Bytes, io::Error>>(), |_: Outcome| {});
    assert_send(&sluice_smol::forward(upstream(), &tx));
    assert_send(&sluice_smol::forward_with(
        upstream(),
        &tx,
        ForwardOptions::default(),
    ));
    assert_send(&sluice_smol::until_closed(&tx, async { 1 }));
}
