//! The guest's memory allocator: a bump allocator (feature `bump-allocator`, on by default).
//!
//! A plugin instance lives for one request: the host instantiates it in a fresh store, calls
//! it once per hook, and throws the whole linear memory away. A general-purpose allocator
//! (Rust's default on `wasm32` is dlmalloc) spends most of its work on bookkeeping for memory
//! that would be reused later, which never happens here: in the built-in policies it was about
//! a third of the guest's instructions, mostly freeing the request record the host had just
//! written (a dozen strings per call, each through `cabi_realloc`). It also starts its heap
//! with a `memory.grow`, leaving the free end of the initial memory unused.
//!
//! This allocator hands out memory from the end of the static data (`__heap_base`) upwards,
//! first in the initial memory (no `memory.grow` for a small request), then in pages it grows.
//! Freeing the most recent allocation takes it back, and so does growing it in place (so a
//! `String` or `Vec` that is pushed to grows without copying); any other free is forgotten
//! until the instance is dropped. The cost: a plugin's memory only grows during one request,
//! so a plugin that allocates and frees far more than it keeps (a long loop building
//! temporary strings) reaches its memory cap sooner — the host then denies, naming the cap.
//! Such a plugin can turn the feature off (`default-features = false`) and get dlmalloc back.
//!
//! The arithmetic lives in [`Arena`], which the native tests run over a plain buffer; the
//! `wasm32` global allocator wraps it with the module's real memory.

// Natively the arena only runs in its tests.
#![cfg_attr(
    not(all(target_arch = "wasm32", feature = "bump-allocator")),
    allow(dead_code)
)]

use core::alloc::Layout;

/// Size of a WebAssembly page.
pub(crate) const PAGE: usize = 64 << 10;

/// Bump-allocation state over one address range that can be extended at its end.
#[derive(Debug, Default)]
pub(crate) struct Arena {
    /// First free byte.
    next: usize,
    /// End of the memory the arena may use.
    end: usize,
    /// Start of the most recent allocation still live (0: none), which may be freed or
    /// resized in place.
    last: usize,
}

impl Arena {
    /// An arena over `[start, end)`.
    pub(crate) const fn new(start: usize, end: usize) -> Self {
        Arena {
            next: start,
            end,
            last: 0,
        }
    }

    /// Allocates `layout`, asking `grow` for more pages when the range is full. `grow(n)`
    /// returns the start address of `n` new pages (or `None`); they need not follow the
    /// current range. Returns 0 when out of memory.
    pub(crate) fn alloc(
        &mut self,
        layout: Layout,
        grow: impl FnOnce(usize) -> Option<usize>,
    ) -> usize {
        if let Some(p) = self.bump(layout) {
            return p;
        }
        // Grow enough for the allocation even if the new pages do not follow ours.
        let pages = (layout.size().max(1) + layout.align()).div_ceil(PAGE);
        let Some(base) = grow(pages) else {
            return 0;
        };
        let Some(top) = pages.checked_mul(PAGE).and_then(|n| base.checked_add(n)) else {
            return 0;
        };
        if base != self.end {
            // Not contiguous: the rest of the old range is given up, and so is the in-place
            // resize of its last allocation.
            self.next = base;
            self.last = 0;
        }
        self.end = top;
        self.bump(layout).unwrap_or(0)
    }

    /// Allocates `layout` in the current range, if it fits.
    fn bump(&mut self, layout: Layout) -> Option<usize> {
        let start = align_up(self.next, layout.align())?;
        let stop = start.checked_add(layout.size().max(1))?;
        if stop > self.end {
            return None;
        }
        self.next = stop;
        self.last = start;
        Some(start)
    }

    /// Frees `ptr`: only the most recent allocation is taken back.
    pub(crate) fn dealloc(&mut self, ptr: usize) {
        if ptr != 0 && ptr == self.last {
            self.next = ptr;
            self.last = 0;
        }
    }

    /// Resizes the most recent allocation in place if the range allows it. Returns whether it
    /// did; if not, the caller allocates, copies and frees.
    pub(crate) fn resize_in_place(&mut self, ptr: usize, new_size: usize) -> bool {
        if ptr == 0 || ptr != self.last {
            return false;
        }
        match ptr.checked_add(new_size.max(1)) {
            Some(stop) if stop <= self.end => {
                self.next = stop;
                true
            }
            _ => false,
        }
    }
}

fn align_up(n: usize, align: usize) -> Option<usize> {
    Some(n.checked_add(align - 1)? & !(align - 1))
}

#[cfg(all(target_arch = "wasm32", feature = "bump-allocator"))]
#[allow(unsafe_code)]
mod global {
    //! The `#[global_allocator]` over the module's linear memory.

    use super::{Arena, PAGE};
    use core::alloc::{GlobalAlloc, Layout};
    use core::cell::UnsafeCell;

    unsafe extern "C" {
        /// End of the static data, defined by the linker (wasm-ld): the heap starts here.
        static __heap_base: u8;
    }

    struct Bump(UnsafeCell<Option<Arena>>);

    // SAFETY: a `wasm32-unknown-unknown` module runs on one thread, and the host calls into
    // an instance one call at a time, so the arena is never touched concurrently.
    unsafe impl Sync for Bump {}

    #[global_allocator]
    static ALLOCATOR: Bump = Bump(UnsafeCell::new(None));

    impl Bump {
        /// The arena, set up on first use: from `__heap_base` to the end of the memory the
        /// instance started with.
        #[allow(clippy::mut_from_ref)]
        fn arena(&self) -> &mut Arena {
            // SAFETY: single-threaded, and no caller holds the reference across another call
            // into the allocator (each method below takes it, uses it, and returns).
            let slot = unsafe { &mut *self.0.get() };
            slot.get_or_insert_with(|| {
                let base = core::ptr::addr_of!(__heap_base) as usize;
                Arena::new(base, core::arch::wasm32::memory_size(0) * PAGE)
            })
        }
    }

    fn grow(pages: usize) -> Option<usize> {
        match core::arch::wasm32::memory_grow(0, pages) {
            usize::MAX => None,
            old => old.checked_mul(PAGE),
        }
    }

    unsafe impl GlobalAlloc for Bump {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            self.arena().alloc(layout, grow) as *mut u8
        }

        unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
            self.arena().dealloc(ptr as usize);
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            if self.arena().resize_in_place(ptr as usize, new_size) {
                return ptr;
            }
            let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
                return core::ptr::null_mut();
            };
            // SAFETY: the contract of `GlobalAlloc::realloc` (what `ptr` and `layout` are).
            unsafe {
                let new = self.alloc(new_layout);
                if !new.is_null() {
                    core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                new
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap_or_else(|_| Layout::new::<u8>())
    }

    #[test]
    fn allocations_are_aligned_and_disjoint() {
        let mut a = Arena::new(1001, 2000);
        let x = a.alloc(layout(3, 1), |_| None);
        let y = a.alloc(layout(8, 8), |_| None);
        let z = a.alloc(layout(4, 4), |_| None);
        assert_eq!((x, y, z), (1001, 1008, 1016));
        // Full: no pages to grow into.
        assert_eq!(a.alloc(layout(1000, 1), |_| None), 0);
    }

    #[test]
    fn the_latest_allocation_is_freed_and_resized_in_place() {
        let mut a = Arena::new(0x1000, 0x2000);
        let x = a.alloc(layout(16, 8), |_| None);
        let y = a.alloc(layout(16, 8), |_| None);
        assert!(!a.resize_in_place(x, 32), "not the latest");
        assert!(a.resize_in_place(y, 64));
        assert_eq!(a.alloc(layout(1, 1), |_| None), y + 64);
        let z = a.alloc(layout(8, 8), |_| None);
        a.dealloc(z);
        assert_eq!(a.alloc(layout(8, 8), |_| None), z, "freed latest is reused");
        a.dealloc(x); // not the latest: forgotten
        assert!(a.alloc(layout(8, 8), |_| None) > z);
        assert!(!a.resize_in_place(z, 0x2000), "beyond the end");
    }

    #[test]
    fn it_grows_contiguously_or_moves_to_the_new_pages() {
        let mut a = Arena::new(100, PAGE);
        let x = a.alloc(layout(PAGE - 200, 1), |_| None);
        assert_eq!(x, 100);
        // Contiguous growth continues where the range ended.
        let y = a.alloc(layout(300, 1), |n| {
            assert_eq!(n, 1);
            Some(PAGE)
        });
        assert_eq!(y, PAGE - 100);
        // New pages elsewhere: the allocation starts there.
        let z = a.alloc(layout(3 * PAGE, 8), |_| Some(10 * PAGE));
        assert_eq!(z, 10 * PAGE);
        // Out of memory.
        assert_eq!(a.alloc(layout(2 * PAGE, 1), |_| None), 0);
    }
}
