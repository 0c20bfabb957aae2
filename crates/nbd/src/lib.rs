//! NBD export of a [`BlockDevice`](blockdev::BlockDevice), the network block
//! device frontend (for `qemu-io`, `qemu-img`, `nbdcopy`, `nbdfuse`, ...).
//!
//! - [`proto`]: the wire constants;
//! - [`conn`]: one connection as a sans-IO state machine: fixed newstyle
//!   negotiation (`NBD_OPT_EXPORT_NAME`, `ABORT`, `LIST`, `INFO`, `GO`; others
//!   answered `NBD_REP_ERR_UNSUP`) and transmission (read, write, flush, trim,
//!   write-zeroes, disconnect; FUA) with simple replies. Bytes in, bytes and
//!   requests out; bad input is a [`ProtocolError`], never a panic;
//! - [`server`]: the TCP shell, one thread per connection; a client that
//!   breaks the protocol is dropped, the others are served on.
//!
//! Wire facts we implement: docs/FORMAT.md, "NBD".

pub mod conn;
pub mod proto;
pub mod server;

pub use conn::{Command, Connection, ExportInfo, ProtocolError, Request};
pub use server::{execute, Export, NbdServer, ServerOptions};
