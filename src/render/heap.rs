//! The catalog's heap: where the precomputed catalog's whole bodies ([`super::kept`]) and its
//! lists' data ([`super::ItemList`]) live, rounded to finer sizes than a general allocator's.
//!
//! At full scale the catalog is some eight million allocations of a few dozen bytes to tens of
//! kilobytes. mimalloc gives each the next of its size classes, four to a doubling: about 9%
//! more than asked, some 280 MB over the catalog (counted from a snapshot's records;
//! docs/benchmarks.md, The catalog's heap). Here a block is rounded to 8 bytes up to 512, and
//! to a thirty-second of its doubling up to 16 KiB (at most 3% more than asked). Blocks of one
//! size are cut from 64 KiB chunks taken from the global allocator, and a freed block goes on
//! its size's free list, for the next body of that size: a refresh frees a body and puts in one
//! of nearly the same size. Chunks are never given back, so the heap holds what its busiest
//! moment of each size needed ([`Stats`]; `/metrics`). Blocks over 16 KiB, a few thousand long
//! lists, come from the global allocator as they are.
//!
//! Each size is one lock, held to pop or push one block: the warm-up's two renderers and the
//! refreshes allocate; a read never does.

use std::alloc::{self, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Every block's alignment, and the step of the smallest sizes.
const ALIGN: usize = 8;

/// Up to this size a block is rounded to [`ALIGN`] bytes.
const FINE_MAX: usize = 512;

/// Above [`FINE_MAX`], the sizes of one doubling are this many steps apart.
const STEPS_PER_DOUBLING: usize = 32;

/// The largest block the heap cuts from its chunks; larger ones are the global allocator's.
const SLAB_MAX: usize = 16 * 1024;

/// What the heap takes from the global allocator at a time, for blocks of one size.
const CHUNK: usize = 64 * 1024;

/// How many sizes of block the heap keeps: 64 fine ones, then 32 for each doubling from 512
/// to 16 KiB.
const SIZES: usize = FINE_MAX / ALIGN
    + (SLAB_MAX.trailing_zeros() - FINE_MAX.trailing_zeros()) as usize * STEPS_PER_DOUBLING;

/// The heap's blocks of one size.
struct Size {
    /// The first free block (each free block holds the next one's address in its first
    /// bytes); 0 for none.
    free: usize,
    /// Where the current chunk's uncut part begins and ends.
    next: usize,
    end: usize,
    /// Blocks handed out and not freed.
    live: u64,
    /// Chunks taken.
    chunks: u64,
}

static SIZE_LISTS: [Mutex<Size>; SIZES] = [const {
    Mutex::new(Size {
        free: 0,
        next: 0,
        end: 0,
        live: 0,
        chunks: 0,
    })
}; SIZES];

/// Bytes of blocks over [`SLAB_MAX`], handed out and not freed.
static LARGE_BYTES: AtomicU64 = AtomicU64::new(0);

/// Which of the heap's sizes holds `size` bytes, and that size's block; None over
/// [`SLAB_MAX`].
fn size_of_block(size: usize) -> Option<(usize, usize)> {
    if size <= FINE_MAX {
        let words = size.div_ceil(ALIGN).max(1);
        return Some((words - 1, words * ALIGN));
    }
    if size > SLAB_MAX {
        return None;
    }
    // The doubling (base, 2 * base] that holds size, and which of its steps.
    let doubling = (usize::BITS - 1 - (size - 1).leading_zeros()) as usize;
    let base = 1usize << doubling;
    let step = base / STEPS_PER_DOUBLING;
    let steps = (size - base).div_ceil(step);
    let index = FINE_MAX / ALIGN
        + (doubling - FINE_MAX.trailing_zeros() as usize) * STEPS_PER_DOUBLING
        + steps
        - 1;
    Some((index, base + steps * step))
}

fn lock(index: usize) -> MutexGuard<'static, Size> {
    // Nothing panics while a size is locked; a poisoned lock still holds consistent lists.
    SIZE_LISTS[index]
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

fn large_layout(size: usize) -> Layout {
    Layout::from_size_align(size, ALIGN).unwrap_or_else(|_| oversized(size))
}

#[cold]
fn oversized(size: usize) -> ! {
    panic!("a catalog block of {size} bytes is larger than any allocation can be")
}

/// A block of at least `size` bytes, aligned to 8. Ends the process, as the global allocator
/// does, if memory is exhausted.
pub(crate) fn alloc(size: usize) -> NonNull<u8> {
    let Some((index, block)) = size_of_block(size) else {
        let layout = large_layout(size);
        // SAFETY: the layout's size is over SLAB_MAX, so not zero.
        let ptr = unsafe { alloc::alloc(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        LARGE_BYTES.fetch_add(size as u64, Ordering::Relaxed);
        return ptr;
    };
    let mut size_list = lock(index);
    size_list.live += 1;
    if size_list.free != 0 {
        let ptr = size_list.free;
        // SAFETY: a free block holds the address of the next one in its first bytes, written
        // by `free`; blocks are aligned to 8 and at least 8 bytes.
        size_list.free = unsafe { (ptr as *const usize).read() };
        // SAFETY: free block addresses are never 0.
        return unsafe { NonNull::new_unchecked(ptr as *mut u8) };
    }
    if size_list.end - size_list.next < block {
        let layout = Layout::from_size_align(CHUNK, 64).unwrap_or_else(|_| oversized(CHUNK));
        // SAFETY: the layout's size is not zero.
        let chunk = unsafe { alloc::alloc(layout) };
        if chunk.is_null() {
            alloc::handle_alloc_error(layout);
        }
        size_list.chunks += 1;
        size_list.next = chunk as usize;
        size_list.end = chunk as usize + CHUNK;
    }
    let ptr = size_list.next;
    size_list.next += block;
    // SAFETY: cut from a chunk the global allocator gave, so not 0.
    unsafe { NonNull::new_unchecked(ptr as *mut u8) }
}

/// Gives back the block at `ptr`.
///
/// # Safety
///
/// `ptr` came from [`alloc`] with the same `size`, and is not used again.
pub(crate) unsafe fn free(ptr: NonNull<u8>, size: usize) {
    let Some((index, _)) = size_of_block(size) else {
        LARGE_BYTES.fetch_sub(size as u64, Ordering::Relaxed);
        // SAFETY: `alloc` gave this block from the global allocator with this layout.
        unsafe { alloc::dealloc(ptr.as_ptr(), large_layout(size)) };
        return;
    };
    let mut size_list = lock(index);
    size_list.live -= 1;
    // SAFETY: the block is at least 8 bytes, aligned to 8, and the caller's no more.
    unsafe { (ptr.as_ptr() as *mut usize).write(size_list.free) };
    size_list.free = ptr.as_ptr() as usize;
}

/// What the heap holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes of the blocks handed out and not freed, each rounded to its size.
    pub live_bytes: u64,
    /// Bytes the heap has taken from the global allocator and holds: its chunks, and the
    /// blocks over 16 KiB. What it holds beyond `live_bytes` is free blocks and the uncut ends
    /// of chunks.
    pub held_bytes: u64,
}

/// What the heap holds now.
pub fn stats() -> Stats {
    let large = LARGE_BYTES.load(Ordering::Relaxed);
    let mut stats = Stats {
        live_bytes: large,
        held_bytes: large,
    };
    for index in 0..SIZES {
        let size_list = lock(index);
        let block = block_of(index) as u64;
        stats.live_bytes += size_list.live * block;
        stats.held_bytes += size_list.chunks * CHUNK as u64;
    }
    stats
}

/// The block size of the heap's `index`th size.
fn block_of(index: usize) -> usize {
    if index < FINE_MAX / ALIGN {
        return (index + 1) * ALIGN;
    }
    let past = index - FINE_MAX / ALIGN;
    let base = FINE_MAX << (past / STEPS_PER_DOUBLING);
    base + (past % STEPS_PER_DOUBLING + 1) * (base / STEPS_PER_DOUBLING)
}

/// A boxed slice of bytes in the catalog's heap, or, for a list rendered to be compacted and
/// dropped, in the global allocator: a temporary in the heap would leave its block on a free
/// list of its size for good. An empty one holds no block.
pub struct HeapBytes {
    ptr: NonNull<u8>,
    /// The length, with [`GLOBAL`] set where the bytes are the global allocator's.
    len: usize,
}

/// The bit of [`HeapBytes::len`] that says the bytes are in the global allocator, as a
/// `Box<[u8]>`'s (no slice is that long).
const GLOBAL: usize = 1 << (usize::BITS - 1);

// SAFETY: a HeapBytes owns its block as a Box<[u8]> owns its bytes, and the heap's lists are
// locked.
unsafe impl Send for HeapBytes {}
// SAFETY: as above; shared references only read.
unsafe impl Sync for HeapBytes {}

impl HeapBytes {
    /// A copy of `bytes` in the heap.
    pub fn copy_of(bytes: &[u8]) -> HeapBytes {
        HeapBytes::filled(bytes.len(), |out| out.copy_from_slice(bytes))
    }

    /// `len` bytes in the heap, as `fill` writes them over zeros.
    pub fn filled(len: usize, fill: impl FnOnce(&mut [u8])) -> HeapBytes {
        if len == 0 {
            return HeapBytes::default();
        }
        let ptr = alloc(len);
        // SAFETY: the block has room for len bytes, zeroed here before a slice of them is
        // made, and is no one else's.
        let out = unsafe {
            std::ptr::write_bytes(ptr.as_ptr(), 0, len);
            std::slice::from_raw_parts_mut(ptr.as_ptr(), len)
        };
        fill(out);
        HeapBytes { ptr, len }
    }

    /// `bytes` as they are, in the global allocator: for a temporary.
    pub fn boxed(bytes: Vec<u8>) -> HeapBytes {
        if bytes.is_empty() {
            return HeapBytes::default();
        }
        let len = bytes.len();
        let ptr = Box::into_raw(bytes.into_boxed_slice()).cast::<u8>();
        HeapBytes {
            // SAFETY: a box's pointer is not null.
            ptr: unsafe { NonNull::new_unchecked(ptr) },
            len: len | GLOBAL,
        }
    }

    /// Whether the bytes are in the catalog's heap (or none).
    pub fn in_heap(&self) -> bool {
        self.len & GLOBAL == 0
    }
}

impl Default for HeapBytes {
    fn default() -> Self {
        HeapBytes {
            ptr: NonNull::dangling(),
            len: 0,
        }
    }
}

impl std::ops::Deref for HeapBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: ptr holds that many initialized bytes (or is dangling with none), ours until
        // drop.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len & !GLOBAL) }
    }
}

impl Clone for HeapBytes {
    fn clone(&self) -> Self {
        match self.in_heap() {
            true => HeapBytes::copy_of(self),
            false => HeapBytes::boxed(self.to_vec()),
        }
    }
}

impl Drop for HeapBytes {
    fn drop(&mut self) {
        let len = self.len & !GLOBAL;
        if len == 0 {
            return;
        }
        if self.in_heap() {
            // SAFETY: the block came from `alloc(len)` and is dropped once.
            unsafe { free(self.ptr, len) };
        } else {
            // SAFETY: the bytes are the box `boxed` let go of, dropped once.
            drop(unsafe {
                Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), len))
            });
        }
    }
}

impl std::fmt::Debug for HeapBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeapBytes")
            .field("len", &self.len())
            .field("in_heap", &self.in_heap())
            .finish()
    }
}

#[cfg(test)]
pub(crate) static TEST_TURN: Mutex<()> = Mutex::new(());

/// Blocks of `size`'s size handed out and not freed.
#[cfg(test)]
pub(crate) fn live_blocks(size: usize) -> u64 {
    let (index, _) = size_of_block(size).expect("a heap size");
    lock(index).live
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_rounds_up_by_at_most_a_thirty_second_past_512_bytes_and_8_bytes_below() {
        let mut last = (0, 0);
        for size in 1..=SLAB_MAX {
            let (index, block) = size_of_block(size).expect("a heap size");
            assert!(block >= size && block % ALIGN == 0, "{size}: {block}");
            if size <= FINE_MAX {
                assert!(block - size < ALIGN, "{size}: {block}");
            } else {
                assert!((block - size) * 32 < size, "{size}: {block}");
            }
            assert_eq!(block_of(index), block, "{size}");
            // The sizes are in order and none is skipped.
            assert!(index == last.0 || index == last.0 + 1, "{size}");
            assert!(index > last.0 || block == last.1 || last.1 == 0);
            last = (index, block);
        }
        assert_eq!(last, (SIZES - 1, SLAB_MAX));
        assert_eq!(SIZES, 224);
        assert_eq!(size_of_block(SLAB_MAX + 1), None);
    }

    #[test]
    fn a_freed_block_is_the_next_of_its_size_handed_out() {
        let _turn = TEST_TURN.lock().unwrap_or_else(PoisonError::into_inner);
        let size = 13_000;
        let first = alloc(size);
        // SAFETY: from alloc with that size.
        unsafe { free(first, size) };
        let again = alloc(size);
        assert_eq!(first, again);
        // SAFETY: as above.
        unsafe { free(again, size) };
    }

    #[test]
    fn bytes_in_the_heap_read_back_from_threads_allocating_and_freeing_at_once() {
        let _turn = TEST_TURN.lock().unwrap_or_else(PoisonError::into_inner);
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut kept = Vec::new();
                    for round in 0..2_000usize {
                        let len = 12_000 + (round * 37 + t as usize * 11) % 2_000;
                        let len = if round % 50 == 0 { SLAB_MAX + len } else { len };
                        let byte = (round as u8).wrapping_mul(31) ^ t;
                        kept.push((HeapBytes::copy_of(&vec![byte; len]), byte, len));
                        if round % 3 == 0 {
                            kept.swap_remove(round % kept.len());
                        }
                    }
                    for (bytes, byte, len) in &kept {
                        assert_eq!(bytes.len(), *len);
                        assert!(bytes.iter().all(|b| b == byte));
                        assert_eq!(&bytes.clone()[..], &bytes[..]);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("a thread's blocks read back");
        }
    }

    #[test]
    fn the_heap_counts_a_block_while_it_lives_and_holds_at_least_what_lives() {
        let _turn = TEST_TURN.lock().unwrap_or_else(PoisonError::into_inner);
        let size = 14_000;
        let before = live_blocks(size);
        let bytes = HeapBytes::copy_of(&[7; 14_000]);
        assert_eq!(live_blocks(size), before + 1);
        let now = stats();
        assert!(now.held_bytes >= now.live_bytes && now.live_bytes >= 14_000);
        drop(bytes);
        assert_eq!(live_blocks(size), before);
        assert_eq!(HeapBytes::default().len(), 0);
        assert_eq!(HeapBytes::copy_of(&[]).len(), 0);
    }

    #[test]
    fn a_temporary_is_the_global_allocators_and_takes_no_block() {
        let _turn = TEST_TURN.lock().unwrap_or_else(PoisonError::into_inner);
        let size = 14_000;
        let before = live_blocks(size);
        let temporary = HeapBytes::boxed(vec![3; size]);
        assert!(!temporary.in_heap());
        assert_eq!(temporary.len(), size);
        let copy = temporary.clone();
        assert!(!copy.in_heap() && copy[..] == temporary[..]);
        assert_eq!(live_blocks(size), before);
        let kept = HeapBytes::copy_of(&temporary);
        assert!(kept.in_heap() && kept.clone().in_heap());
        assert_eq!(live_blocks(size), before + 1);
        drop((temporary, copy, kept));
        assert_eq!(live_blocks(size), before);
    }
}
