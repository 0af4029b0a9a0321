//! The commit point: an attempt holds back what it reads until its first progress
//! event, so that an attempt that fails before it can be replaced invisibly.
