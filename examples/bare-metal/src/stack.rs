//! RAM accounting: the statics' size from the linker's symbols, and the
//! stack's high-water mark by painting (fill the free RAM below the stack
//! pointer with a pattern at start, later find the lowest word that changed).

use core::ptr::{addr_of, read_volatile, write_volatile};

/// An unlikely value for live stack data to leave behind by chance.
const PAINT: u32 = 0xCAFE_F00D;

/// Bytes below the stack pointer left unpainted while painting: the painting
/// code itself may spill there. Any real peak is far deeper.
const GUARD: usize = 64;

extern "C" {
    // From cortex-m-rt's link.x: RAM starts at `_ram_start`; the statics
    // (.data, .bss, .uninit) end at `_stack_end`, the lowest address the stack
    // may reach; the stack starts (at the top of RAM) at `_stack_start`.
    static _ram_start: u32;
    static _stack_end: u32;
    static _stack_start: u32;
    // From memory.x: its address is the number of bytes reserved for the stack.
    static _stack_reserve: u8;
}

fn ram_start() -> usize {
    addr_of!(_ram_start) as usize
}
fn stack_end() -> usize {
    addr_of!(_stack_end) as usize
}
fn stack_start() -> usize {
    addr_of!(_stack_start) as usize
}

/// Paints the free RAM between the statics and the current stack pointer.
/// Call first thing in `main`.
pub fn paint() {
    let sp = cortex_m::register::msp::read() as usize;
    let mut p = stack_end();
    while p + GUARD < sp {
        // SAFETY: [stack_end, sp) is RAM that neither a static nor a live
        // stack frame occupies; it is word aligned (link.x asserts it).
        unsafe { write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
}

/// RAM use as measured at the time of the call.
pub struct Usage {
    /// Bytes of statics (.data + .bss + .uninit).
    pub statics: usize,
    /// Deepest stack use since [`paint`], in bytes.
    pub stack_peak: usize,
    /// Bytes memory.x reserves for the stack (the linker checks they fit).
    pub stack_reserve: usize,
    /// The stack reached the statics' end, so the peak is a lower bound and
    /// statics may have been overwritten.
    pub overflowed: bool,
}

pub fn usage() -> Usage {
    let (lo, top) = (stack_end(), stack_start());
    let mut p = lo;
    // SAFETY: reads of word-aligned RAM between the statics and the stack top.
    while p < top && unsafe { read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    Usage {
        statics: lo - ram_start(),
        stack_peak: top - p,
        stack_reserve: addr_of!(_stack_reserve) as usize,
        overflowed: p == lo,
    }
}
