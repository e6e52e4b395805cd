//! A `#![no_std] #![no_main]` binary for thumb targets that links
//! `cllm-core` and runs one sequential reduction step.
//!
//! Thumb targets ship no `std` at all, so this crate building and *linking*
//! for `thumbv7em-none-eabihf` and `thumbv6m-none-eabi` proves that the core
//! (tree, accumulators, reduction protocol, barrier atomics) needs neither
//! `std` nor an allocator:
//!
//! ```text
//! cd nostd-check
//! cargo build --release --target thumbv7em-none-eabihf
//! cargo build --release --target thumbv6m-none-eabi
//! ```
//!
//! It is not firmware: there is no vector table or linker script, only an
//! entry symbol so the linker keeps (and resolves) everything reachable from
//! [`cllm_nostd_check`].
#![no_std]
#![no_main]

use core::ptr::addr_of_mut;

use cllm_core::accumulate::F32Acc;
use cllm_core::reduce::{reduce_sequential, sequential_cell_len, sequential_f32_len, SpinBarrier};
use cllm_core::tree::{Shape, Sphere, SphereTree};

const DEPTH: u32 = 2;
const BRANCHING: u32 = 3;
const SPHERES: usize = 13; // (3^3 - 1) / 2
const PARAMS: usize = 64;
const UNITS: usize = 7;

// TODO(accumulators): add FixedAcc and ExactAcc runs here once they land;
// their buffers are sized with the same `sequential_*_len` helpers.
type Acc = F32Acc;

static mut ARENA: [Sphere; SPHERES] = [Sphere::EMPTY; SPHERES];
static mut BUFS: [f32; sequential_f32_len::<Acc>(DEPTH, PARAMS)] =
    [0.0; sequential_f32_len::<Acc>(DEPTH, PARAMS)];
static mut CELLS: [f32; sequential_cell_len::<Acc>(PARAMS)] =
    [0.0; sequential_cell_len::<Acc>(PARAMS)];
static mut GRAD: [f32; PARAMS] = [0.0; PARAMS];

/// Error codes returned to a C caller (0 = success).
#[repr(u32)]
enum Code {
    Ok = 0,
    Shape = 1,
    Arena = 2,
    Reduce = 3,
    Barrier = 4,
    Wrong = 5,
}

/// Builds the tree in a static arena, splits the units over its leaves and
/// reduces one step of synthetic gradients with the sequential driver.
/// Returns 0 on success, or a `Code`.
///
/// # Safety
/// Not reentrant: it uses static buffers. Call it from one context at a time.
#[no_mangle]
pub unsafe extern "C" fn cllm_nostd_check() -> u32 {
    run() as u32
}

fn run() -> Code {
    let shape = match Shape::new(DEPTH, BRANCHING) {
        Ok(s) => s,
        Err(_) => return Code::Shape,
    };
    // SAFETY: `cllm_nostd_check` is documented as not reentrant, so these
    // are the only references to the statics while it runs.
    let (arena, bufs, cells, grad) = unsafe {
        (
            &mut *addr_of_mut!(ARENA),
            &mut *addr_of_mut!(BUFS),
            &mut *addr_of_mut!(CELLS),
            &mut *addr_of_mut!(GRAD),
        )
    };
    let tree = match SphereTree::new(shape, arena) {
        Ok(t) => t,
        Err(_) => return Code::Arena,
    };
    // Every unit must land on exactly one leaf.
    let covered: usize = tree
        .leaves()
        .iter()
        .filter_map(|s| shape.leaf_index(s.id))
        .map(|j| shape.leaf_units(j, UNITS).len())
        .sum();
    if covered != UNITS {
        return Code::Wrong;
    }
    let unit = |u: usize, g: &mut [f32]| {
        for (i, x) in g.iter_mut().enumerate() {
            *x = ((u * 31 + i) % 7) as f32 - 3.0;
        }
    };
    if reduce_sequential(&F32Acc, shape, UNITS, bufs, cells, grad, unit).is_err() {
        return Code::Reduce;
    }
    // Small integers: the f32 sum is exact, so it can be checked here.
    for (i, &x) in grad.iter().enumerate() {
        let expected: i64 = (0..UNITS).map(|u| ((u * 31 + i) % 7) as i64 - 3).sum();
        if x != expected as f32 {
            return Code::Wrong;
        }
    }
    // Links the barrier's fetch_add (a critical section on thumbv6m).
    let barrier = SpinBarrier::new(1);
    if barrier.wait().is_err() {
        return Code::Barrier;
    }
    Code::Ok
}

/// Entry symbol, so that the linker resolves everything the check uses.
#[no_mangle]
pub extern "C" fn _start() -> ! {
    // SAFETY: the only caller.
    let code = unsafe { cllm_nostd_check() };
    core::hint::black_box(code);
    loop {
        core::hint::spin_loop();
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {
        core::hint::spin_loop();
    }
}

/// Single-core critical sections for targets without compare-and-swap:
/// mask interrupts (PRIMASK) and restore the previous state on release.
#[cfg(not(target_has_atomic = "32"))]
mod single_core {
    use core::arch::asm;
    use core::sync::atomic::{compiler_fence, Ordering};

    struct SingleCore;
    critical_section::set_impl!(SingleCore);

    // SAFETY: on a single core with interrupts masked nothing else runs, and
    // `release` restores exactly the state `acquire` found.
    unsafe impl critical_section::Impl for SingleCore {
        unsafe fn acquire() -> bool {
            let primask: u32;
            // SAFETY: reading PRIMASK and masking interrupts is always allowed
            // in privileged thread mode, where this binary runs.
            unsafe {
                asm!("mrs {}, PRIMASK", out(reg) primask, options(nomem, nostack, preserves_flags));
                asm!("cpsid i", options(nomem, nostack, preserves_flags));
            }
            compiler_fence(Ordering::SeqCst);
            // Interrupts were enabled iff PRIMASK bit 0 was clear.
            primask & 1 == 0
        }

        unsafe fn release(was_enabled: bool) {
            compiler_fence(Ordering::SeqCst);
            if was_enabled {
                // SAFETY: re-enables what `acquire` disabled.
                unsafe { asm!("cpsie i", options(nomem, nostack, preserves_flags)) };
            }
        }
    }
}
