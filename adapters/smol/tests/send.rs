//! Compile-time check: the adapter's futures are `Send` when their inputs are.

use std::io;

use bytes::Bytes;
use sluice::forward::ForwardOptions;
use sluice_test_support::upstream::{assert_send, empty};

#[test]
fn forward_futures_are_send() {
    let (tx, _rx) = async_channel::bounded::<Result<Bytes, io::Error>>(1);
    assert_send(&sluice_smol::forward(empty(), &tx));
    assert_send(&sluice_smol::forward_with(
        empty(),
        &tx,
        ForwardOptions::default(),
    ));
    assert_send(&sluice_smol::until_closed(&tx, async { 1 }));
}
