//! The open gate: DRBD's Secondary refuses to be opened with `EMEDIUMTYPE`
//! ("Wrong medium type"). Here the switch is shared between whoever decides the
//! role and the FUSE filesystem that enforces it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A shared open/refuse switch; clones share the same state.
///
/// While refused, opening the device file fails with `EMEDIUMTYPE`, and so does
/// I/O on handles that were opened before (the loop device keeps its handle
/// across role changes, so refusing opens alone would not stop `mount` from
/// reading through an attached loop device).
#[derive(Debug, Clone)]
pub struct OpenGate(Arc<AtomicBool>);

impl OpenGate {
    /// A gate that starts open (`true`) or refusing (`false`).
    pub fn new(open: bool) -> Self {
        OpenGate(Arc::new(AtomicBool::new(open)))
    }

    /// Lets opens and I/O through (Primary).
    pub fn open(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Refuses opens and I/O with `EMEDIUMTYPE` (Secondary).
    pub fn refuse(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    /// Whether opens and I/O go through.
    pub fn is_open(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl Default for OpenGate {
    fn default() -> Self {
        OpenGate::new(true)
    }
}
