//! How other threads reach a running tracer: an eventfd it polls, and the
//! request (interrupt, or shut down for a signal) stored beside it.

use nix::sys::eventfd::EventFd;

/// Ways the front end reaches a running tracer from another thread.
pub struct Waker {
    pub(super) fd: EventFd,
    request: std::sync::atomic::AtomicI32,
}

/// `Waker::request` values: interrupt, or shut down because of a signal.
pub const WAKE_INTERRUPT: i32 = -1;

impl Waker {
    pub fn new() -> std::io::Result<Waker> {
        let fd = EventFd::from_value_and_flags(
            0,
            nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
        )?;
        Ok(Waker {
            fd,
            request: std::sync::atomic::AtomicI32::new(0),
        })
    }

    /// Ask the tracer to stop running: `WAKE_INTERRUPT`, or a signal number
    /// to shut down. A shutdown is never downgraded to an interrupt.
    pub fn wake(&self, what: i32) {
        use std::sync::atomic::Ordering;
        let _ = self
            .request
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |old| {
                if old > 0 { None } else { Some(what) }
            });
        let _ = self.fd.write(1);
    }

    /// Forget an interrupt asked for while nothing ran (Ctrl-C at the
    /// prompt); a shutdown stays.
    pub(super) fn clear_interrupt(&self) {
        use std::sync::atomic::Ordering;
        let _ =
            self.request
                .compare_exchange(WAKE_INTERRUPT, 0, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Whether a request waits (no syscall: the tracer asks at every stop).
    pub(super) fn requested(&self) -> bool {
        self.request.load(std::sync::atomic::Ordering::SeqCst) != 0
    }

    pub(super) fn take(&self) -> i32 {
        let _ = self.fd.read();
        self.request.swap(0, std::sync::atomic::Ordering::SeqCst)
    }
}
