//! Small blocks from per-size free lists, in front of a general allocator.
//!
//! A tick builds and drops thousands of strings and short vectors of a few dozen bytes
//! each (metric names, label keys and values, their lists), and after a tick the oldest
//! observation the instance held is dropped. In perf of `operator run` the guest's general
//! allocator was an eighth of the whole process, nearly all of it in these small blocks.
//! Here a block of up to [`MAX_SMALL`] bytes comes off a free list of its size class and
//! goes back onto it: a pop and a push. Larger or more aligned blocks go to the allocator
//! behind.
//!
//! The price: a small block, once freed, is kept for its size class rather than returned.
//! What a class holds is bounded by the most of that class the plugin ever had live at
//! once, and linear memory still grows only through `memory.grow`, so the host's memory
//! cap bounds it exactly as before.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ptr::{self, NonNull};

/// The largest block served from a free list.
pub const MAX_SMALL: usize = 256;
/// Class granularity and the alignment every small block has.
const GRAIN: usize = 16;
const CLASSES: usize = MAX_SMALL / GRAIN;
/// Blocks are carved from chunks of this size taken from the allocator behind.
const CHUNK: usize = 64 * 1024;

struct Lists {
    /// Each class's free blocks, linked through their first word.
    free: [Option<NonNull<Free>>; CLASSES],
    /// The unused rest of the current chunk.
    bump: *mut u8,
    end: *mut u8,
}

struct Free {
    next: Option<NonNull<Free>>,
}

/// Serves small blocks itself and passes the rest to `A`.
///
/// Not for threads: the lists have no lock. It is `Sync` only where there are no threads
/// (wasm without the `atomics` feature), which is where the SDK installs it.
pub struct SmallFirst<A> {
    behind: A,
    lists: UnsafeCell<Lists>,
}

// SAFETY: without wasm threads there is one thread, so the lists are never shared.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
unsafe impl<A: Sync> Sync for SmallFirst<A> {}

impl<A> SmallFirst<A> {
    pub const fn new(behind: A) -> SmallFirst<A> {
        SmallFirst {
            behind,
            lists: UnsafeCell::new(Lists {
                free: [None; CLASSES],
                bump: ptr::null_mut(),
                end: ptr::null_mut(),
            }),
        }
    }
}

/// The size class of a layout served here, or None for the allocator behind.
fn class(layout: Layout) -> Option<usize> {
    (layout.size() <= MAX_SMALL && layout.align() <= GRAIN)
        .then(|| layout.size().max(1).div_ceil(GRAIN) - 1)
}

impl<A: GlobalAlloc> SmallFirst<A> {
    /// A block of class `c`.
    ///
    /// # Safety
    /// Only one call into these lists at a time.
    unsafe fn take(&self, c: usize) -> *mut u8 {
        // SAFETY: one thread, and no call here re-enters the lists.
        let lists = unsafe { &mut *self.lists.get() };
        if let Some(block) = lists.free[c] {
            // SAFETY: a block on a list was written with its link when it was freed.
            lists.free[c] = unsafe { block.as_ref().next };
            return block.as_ptr().cast();
        }
        let size = (c + 1) * GRAIN;
        if (lists.end as usize) - (lists.bump as usize) < size {
            // The chunk's rest (under MAX_SMALL bytes) is left unused.
            // SAFETY: a valid, non-zero layout.
            let chunk = unsafe {
                self.behind
                    .alloc(Layout::from_size_align_unchecked(CHUNK, GRAIN))
            };
            if chunk.is_null() {
                return chunk;
            }
            lists.bump = chunk;
            // SAFETY: one past the end of the chunk just allocated.
            lists.end = unsafe { chunk.add(CHUNK) };
        }
        let block = lists.bump;
        // SAFETY: `size` bytes of the chunk remain past `bump`.
        lists.bump = unsafe { block.add(size) };
        block
    }

    /// Puts a block of class `c` back on its list.
    ///
    /// # Safety
    /// `block` came from `take(c)` and is not in use; one call at a time.
    unsafe fn give(&self, block: *mut u8, c: usize) {
        // SAFETY: as `take`.
        let lists = unsafe { &mut *self.lists.get() };
        let block = block.cast::<Free>();
        // SAFETY: the block is ours again, 16-aligned and at least 16 bytes.
        unsafe {
            block.write(Free {
                next: lists.free[c],
            })
        };
        lists.free[c] = NonNull::new(block);
    }
}

// SAFETY: every block handed out is `layout.size()` bytes or more at `layout.align()`;
// small ones are distinct pieces of chunks the allocator behind gave us and kept live, and
// are only reused after being freed.
unsafe impl<A: GlobalAlloc> GlobalAlloc for SmallFirst<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class(layout) {
            // SAFETY: one thread (see `Sync`).
            Some(c) => unsafe { self.take(c) },
            // SAFETY: the caller's layout, passed on.
            None => unsafe { self.behind.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match class(layout) {
            // SAFETY: allocated with this layout, so from this class's list.
            Some(c) => unsafe { self.give(ptr, c) },
            // SAFETY: allocated behind with this layout.
            None => unsafe { self.behind.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` is a valid size at this alignment.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class(layout), class(new)) {
            // Still fits the block it has.
            (Some(a), Some(b)) if a == b => ptr,
            // SAFETY: the caller's block and layout, passed on.
            (None, None) => unsafe { self.behind.realloc(ptr, layout, new_size) },
            _ => {
                // SAFETY: as `alloc`, `dealloc`; the copy is within both blocks.
                unsafe {
                    let moved = self.alloc(new);
                    if !moved.is_null() {
                        ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    moved
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;
    use std::cell::Cell;

    /// The allocator behind, counting what reaches it.
    struct Counting {
        allocs: Cell<usize>,
        frees: Cell<usize>,
    }

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            self.allocs.set(self.allocs.get() + 1);
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            self.frees.set(self.frees.get() + 1);
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    fn small_first() -> SmallFirst<Counting> {
        SmallFirst::new(Counting {
            allocs: Cell::new(0),
            frees: Cell::new(0),
        })
    }

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn classes_cover_every_small_size_once() {
        assert_eq!(class(layout(1, 1)), Some(0));
        assert_eq!(class(layout(16, 8)), Some(0));
        assert_eq!(class(layout(17, 1)), Some(1));
        assert_eq!(class(layout(MAX_SMALL, 16)), Some(CLASSES - 1));
        assert_eq!(class(layout(MAX_SMALL + 1, 1)), None);
        assert_eq!(class(layout(8, 32)), None, "over-aligned goes behind");
    }

    #[test]
    fn a_freed_block_is_reused_by_its_class_and_no_other() {
        let a = small_first();
        unsafe {
            let l = layout(24, 8);
            let p = a.alloc(l);
            a.dealloc(p, l);
            assert_eq!(
                a.alloc(layout(30, 4)),
                p,
                "same class: the block comes back"
            );
            let q = a.alloc(layout(40, 8));
            assert_ne!(q, p, "another class never gets it");
        }
        assert_eq!(a.behind.allocs.get(), 1, "one chunk served them all");
    }

    #[test]
    fn blocks_are_aligned_disjoint_and_keep_their_bytes() {
        let a = small_first();
        let mut live = Vec::new();
        unsafe {
            // Enough to need several chunks, of every class.
            for i in 0..20_000usize {
                let l = layout(1 + i % MAX_SMALL, 1 << (i % 5));
                let p = a.alloc(l);
                assert!(!p.is_null());
                assert_eq!(p as usize % l.align(), 0);
                ptr::write_bytes(p, (i % 251) as u8, l.size());
                live.push((p, l, (i % 251) as u8));
            }
            for &(p, l, byte) in &live {
                let bytes = std::slice::from_raw_parts(p, l.size());
                assert!(bytes.iter().all(|&b| b == byte), "a block was overwritten");
            }
            for (p, l, _) in live.drain(..) {
                a.dealloc(p, l);
            }
        }
        assert!(a.behind.allocs.get() > 1);
        assert_eq!(a.behind.frees.get(), 0, "chunks are kept");
    }

    #[test]
    fn large_and_over_aligned_blocks_go_behind_and_come_back() {
        let a = small_first();
        unsafe {
            for l in [layout(MAX_SMALL + 1, 8), layout(64, 64)] {
                let p = a.alloc(l);
                a.dealloc(p, l);
            }
        }
        assert_eq!(a.behind.allocs.get(), 2);
        assert_eq!(a.behind.frees.get(), 2);
    }

    #[test]
    fn realloc_keeps_the_bytes_across_classes_and_to_the_allocator_behind() {
        let a = small_first();
        unsafe {
            let mut l = layout(10, 1);
            let mut p = a.alloc(l);
            ptr::copy_nonoverlapping(b"0123456789".as_ptr(), p, 10);
            assert_eq!(a.realloc(p, l, 16), p, "same class: in place");
            l = layout(16, 1);
            for size in [100, 1000, 5000, 200, 10] {
                p = a.realloc(p, l, size);
                l = layout(size, 1);
                assert_eq!(std::slice::from_raw_parts(p, 10), b"0123456789");
            }
            a.dealloc(p, l);
        }
        assert_eq!(
            a.behind.allocs.get(),
            a.behind.frees.get() + 1,
            "everything behind was freed but the chunk"
        );
    }
}
