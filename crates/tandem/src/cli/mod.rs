//! One module per tool the binary stands in for.

pub mod daemon;
pub mod dlm;
pub mod drbdadm;
pub mod lab;
pub mod mkfs_ocfs2;
pub mod mount;
pub mod nbd;
pub mod o2cb;
pub mod ocfs2;
pub mod service;
