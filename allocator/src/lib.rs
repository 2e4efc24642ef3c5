//! The global allocator of the `switchyard` binary and the benchmark
//! builds: mimalloc, called the way its plain `malloc` is fastest.
//!
//! The `mimalloc` crate's `GlobalAlloc` sends every request through
//! `mi_malloc_aligned`, even for the alignment of 1 to 8 that nearly every
//! Rust allocation asks for. In mimalloc 3 that call takes its fast path
//! only while the size class's page has a free block ready; otherwise a
//! size that is not a power of two is not "naturally aligned" to it, and
//! the request is over-allocated from the next size class up. The
//! original class's freed blocks are then only gathered by a plain
//! allocation, which never comes, so under a steady request load a good
//! share of the request path's allocations took that slow path
//! (BENCHMARKS.md, "The shipped binary").
//!
//! Every mimalloc block is at least word-aligned (size classes are whole
//! words and pages are aligned), so a request aligned to at most a word
//! is served by `mi_malloc`, `mi_zalloc` and `mi_realloc`; larger
//! alignments keep the aligned calls. Freeing is `mi_free` either way.

#![no_std]

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;

use libmimalloc_sys as mi;

/// Every block mimalloc hands out is aligned to at least this.
const WORD: usize = core::mem::size_of::<usize>();

/// mimalloc, with word-aligned requests on its plain path.
#[derive(Debug, Default, Clone, Copy)]
pub struct Allocator;

// SAFETY: each method forwards to the mimalloc call with the same contract;
// the plain calls are used only where their word alignment satisfies the
// layout, and every pointer is freed or resized by mimalloc, which accepts
// pointers from both its plain and aligned calls.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_malloc(layout.size()).cast()
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_zalloc(layout.size()).cast()
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocates, writes, grows, shrinks and frees `layout`, checking the
    /// alignment of every pointer and that the contents survive a resize.
    fn round_trip(layout: Layout, zeroed: bool) {
        let a = Allocator;
        // SAFETY: non-zero sizes; every pointer is checked for null and
        // used within its size; it is freed with the layout it has.
        unsafe {
            let p = if zeroed {
                a.alloc_zeroed(layout)
            } else {
                a.alloc(layout)
            };
            assert!(!p.is_null());
            assert_eq!(p as usize % layout.align(), 0, "{layout:?}");
            if zeroed {
                assert!((0..layout.size()).all(|i| *p.add(i) == 0), "{layout:?}");
            }
            for i in 0..layout.size() {
                *p.add(i) = i as u8;
            }
            let bigger = layout.size() * 3 + 5;
            let q = a.realloc(p, layout, bigger);
            assert!(!q.is_null());
            assert_eq!(q as usize % layout.align(), 0, "{layout:?} grown");
            assert!((0..layout.size()).all(|i| *q.add(i) == i as u8));
            let grown = Layout::from_size_align(bigger, layout.align()).unwrap();
            let smaller = layout.size().div_ceil(2);
            let r = a.realloc(q, grown, smaller);
            assert!(!r.is_null());
            assert_eq!(r as usize % layout.align(), 0, "{layout:?} shrunk");
            assert!((0..smaller).all(|i| *r.add(i) == i as u8));
            a.dealloc(r, Layout::from_size_align(smaller, layout.align()).unwrap());
        }
    }

    #[test]
    fn every_size_and_alignment_comes_back_aligned_and_intact() {
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [1, 3, 7, 8, 13, 24, 100, 104, 1000, 8192, 70_000, 1 << 21] {
                let layout = Layout::from_size_align(size, align).unwrap();
                round_trip(layout, false);
                round_trip(layout, true);
            }
        }
    }

    #[test]
    fn many_live_blocks_of_one_odd_size_stay_word_aligned() {
        let a = Allocator;
        let layout = Layout::from_size_align(100, 8).unwrap();
        // SAFETY: as above; all blocks are freed with their layout.
        unsafe {
            let blocks: [*mut u8; 512] = core::array::from_fn(|_| a.alloc(layout));
            for &p in &blocks {
                assert!(!p.is_null());
                assert_eq!(p as usize % WORD, 0);
            }
            for p in blocks {
                a.dealloc(p, layout);
            }
        }
    }
}
