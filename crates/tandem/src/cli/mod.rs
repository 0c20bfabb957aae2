//! One module per tool the binary stands in for.

pub mod drbdadm;
pub mod lab;
pub mod o2cb;
