//! What the xtask commands share with their tests: the contract generator.

pub mod contract;
