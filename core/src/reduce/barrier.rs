//! An abortable spin barrier on `portable-atomic` counters.
//!
//! Generation counting: each waiter notes the generation, bumps `arrived`,
//! and the last arriver resets `arrived` and advances the generation, which
//! releases the others. Only `fetch_add`, `load` and `store` are used, so it
//! works on targets without compare-and-swap (thumbv6m), where
//! `portable-atomic` builds `fetch_add` from a critical section.
//!
//! Under `cfg(loom)` the atomics are loom's, and a waiter that finds the
//! phase still open blocks on a loom condition variable instead of
//! spinning: loom explores schedules without fairness, so two threads
//! spinning at once form an infinite schedule it cannot finish. The
//! protocol loom checks is otherwise the same code (the same `poll`
//! runs before every pause, so the lock-free fast path is still explored).
//!
//! Abort exists because a barrier that waits for a participant that has
//! panicked or hit an error would spin forever: whoever fails calls
//! [`SpinBarrier::abort`] (or holds an [`AbortGuard`]), and every current
//! and future `wait` returns `Err(Aborted)`.

use core::fmt;
use core::marker::PhantomData;

#[cfg(loom)]
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
#[cfg(not(loom))]
use portable_atomic::{AtomicBool, AtomicUsize, Ordering};
use spin::relax::{RelaxStrategy, Spin};

/// The barrier was aborted: some participant gave up, the phase did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Aborted;

impl fmt::Display for Aborted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("barrier aborted by a participant")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Aborted {}

/// A reusable barrier for a fixed number of participants that spins (with
/// the relax strategy `R`, default [`spin::relax::Spin`]) instead of
/// sleeping. Hosted executors that may run more threads than cores can pass
/// a strategy that yields to the scheduler.
pub struct SpinBarrier<R = Spin> {
    participants: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    aborted: AtomicBool,
    _relax: PhantomData<fn() -> R>,
    #[cfg(loom)]
    wake: (loom::sync::Mutex<()>, loom::sync::Condvar),
}

impl SpinBarrier<Spin> {
    /// A barrier for `participants` threads (0 is treated as 1, so that
    /// `wait` can never block forever on a barrier nobody can complete).
    #[cfg(not(loom))]
    pub const fn new(participants: usize) -> Self {
        Self::with_relax(participants)
    }

    /// A barrier for `participants` threads (0 is treated as 1).
    #[cfg(loom)]
    pub fn new(participants: usize) -> Self {
        Self::with_relax(participants)
    }
}

impl<R: RelaxStrategy> SpinBarrier<R> {
    /// A barrier for `participants` threads whose waiters relax with `R`.
    #[cfg(not(loom))]
    pub const fn with_relax(participants: usize) -> Self {
        SpinBarrier {
            participants: if participants == 0 { 1 } else { participants },
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            aborted: AtomicBool::new(false),
            _relax: PhantomData,
        }
    }

    /// A barrier for `participants` threads whose waiters relax with `R`.
    #[cfg(loom)]
    pub fn with_relax(participants: usize) -> Self {
        SpinBarrier {
            participants: if participants == 0 { 1 } else { participants },
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            aborted: AtomicBool::new(false),
            _relax: PhantomData,
            wake: (loom::sync::Mutex::new(()), loom::sync::Condvar::new()),
        }
    }

    /// Number of participants.
    pub fn participants(&self) -> usize {
        self.participants
    }

    /// Waits until all participants have called `wait` for this phase.
    ///
    /// Everything a participant wrote before its `wait` is visible to every
    /// participant after theirs returns `Ok`. Returns `Err(Aborted)` at once
    /// if the barrier is aborted, and promptly when it is aborted while
    /// waiting. A phase that completes while an abort comes in may return
    /// `Ok` to some and `Err` to others (an abort issued by a participant
    /// that has already left the phase never fails it); the next `wait`
    /// fails for all, so an executor treats any `Err` as the step failing.
    pub fn wait(&self) -> Result<(), Aborted> {
        if self.aborted.load(Ordering::Acquire) {
            return Err(Aborted);
        }
        // This generation cannot end before our own arrival below, so the
        // value read here is the generation we are joining.
        let generation = self.generation.load(Ordering::Acquire);
        // AcqRel: the last arriver acquires every earlier arrival's writes
        // (release sequence on `arrived`) and publishes them all with the
        // Release store of the next generation.
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.participants {
            // Nobody touches `arrived` again before seeing the new generation,
            // which is ordered after this store.
            self.arrived.store(0, Ordering::Relaxed);
            self.generation
                .store(generation.wrapping_add(1), Ordering::Release);
            self.wake_all();
            return Ok(());
        }
        loop {
            if let Some(done) = self.poll(generation) {
                return done;
            }
            self.pause(generation);
        }
    }

    /// The outcome of a wait on `generation`, or `None` while it is open.
    fn poll(&self, generation: usize) -> Option<Result<(), Aborted>> {
        if self.generation.load(Ordering::Acquire) != generation {
            return Some(Ok(()));
        }
        if self.aborted.load(Ordering::Acquire) {
            // An abort issued after this phase completed (e.g. by a
            // participant that already left it) carries the new generation
            // with it: report the phase as done.
            if self.generation.load(Ordering::Acquire) != generation {
                return Some(Ok(()));
            }
            return Some(Err(Aborted));
        }
        None
    }

    #[cfg(not(loom))]
    fn pause(&self, _generation: usize) {
        R::relax();
    }

    #[cfg(loom)]
    fn pause(&self, generation: usize) {
        let guard = self.wake.0.lock().unwrap();
        // Re-checked under the lock: a waker stores, then takes the lock to
        // notify, so either we see its store here or it sees us waiting.
        if self.poll(generation).is_none() {
            drop(self.wake.1.wait(guard).unwrap());
        }
    }

    #[cfg(not(loom))]
    fn wake_all(&self) {}

    #[cfg(loom)]
    fn wake_all(&self) {
        let _guard = self.wake.0.lock().unwrap();
        self.wake.1.notify_all();
    }

    /// Releases every current waiter with `Err(Aborted)` and makes every
    /// later `wait` fail until [`SpinBarrier::reset`].
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
        self.wake_all();
    }

    /// Whether [`SpinBarrier::abort`] was called (since the last reset).
    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }

    /// Makes an aborted barrier usable again. `&mut self` proves nobody is
    /// waiting (all participants have returned, e.g. their threads were joined).
    pub fn reset(&mut self) {
        self.arrived.store(0, Ordering::Relaxed);
        self.aborted.store(false, Ordering::Relaxed);
    }

    /// A guard that aborts the barrier when dropped unless
    /// [`AbortGuard::disarm`]ed: hold it across a participant's work so that
    /// a panic (unwinding) or an early `return Err` releases the others.
    pub fn abort_on_drop(&self) -> AbortGuard<'_, R> {
        AbortGuard {
            barrier: self,
            armed: true,
        }
    }
}

impl<R> fmt::Debug for SpinBarrier<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpinBarrier")
            .field("participants", &self.participants)
            .field("arrived", &self.arrived.load(Ordering::Relaxed))
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .field("aborted", &self.aborted.load(Ordering::Relaxed))
            .finish()
    }
}

/// Aborts its barrier on drop unless disarmed (see [`SpinBarrier::abort_on_drop`]).
#[must_use = "dropping the guard at once aborts the barrier"]
pub struct AbortGuard<'b, R: RelaxStrategy = Spin> {
    barrier: &'b SpinBarrier<R>,
    armed: bool,
}

impl<R: RelaxStrategy> AbortGuard<'_, R> {
    /// The participant finished normally: do not abort.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl<R: RelaxStrategy> Drop for AbortGuard<'_, R> {
    fn drop(&mut self) {
        if self.armed {
            self.barrier.abort();
        }
    }
}
