//! The property that matters most (issue 6): concurrent writers (creates, updates, deletes,
//! restores, membership changes, multi-row transactions) while clients connect, disconnect
//! at random points and resume from their last cursor, across two streamer replicas with the
//! materializer leader killed in the middle, while users join and leave teams (a leave, a
//! removal by the owner, an invitation accepted). At the end every client's copy equals the
//! database's state for its scopes and every client's cursors only increased; and per client
//! (issue 18), each row version arrived once and each committed transaction whole, in one
//! `change` frame holding exactly its rows in the client's scopes.
//!
//! "Once" counts what a client had when it resumed: rows of frames after its last cursor are
//! sent again by design (a page's frames before its last, a `change` frame sent while an
//! earlier transaction waited for a part), and a `scope_removed` (or `reset`) drops what the
//! client held of that team, which may then come again.
//!
//! The expectation is the test's own: a model of memberships that changes only after the api
//! confirmed a change (the database must agree with it), and the live rows of the model's
//! scopes in the api's tables. Every write's answer is checked against the model too: only
//! named refusals pass (a team the author does not belong to, a deleted entry's update).
//! On a mismatch the differing keys are printed with their read-model copies and the frames
//! that carried them, and the client's whole log and the CHANGES stream go to a file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod client;
#[path = "../common/mod.rs"]
mod common;
mod convergence;
mod transactions;
mod writers;
