//! The HTTP plumbing every feature shares: oRPC's RPC codec and batching, the error type,
//! input validation, pagination, the client's IP and per-IP rate limits.

pub mod client_ip;
pub mod error;
pub mod issues;
pub mod pagination;
pub mod rate_limit;
pub mod rest;
pub mod rpc;
pub mod rpc_batch;
pub mod validation;
