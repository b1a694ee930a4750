//! Maps a worker's status page (layout in [`shared::shm`]): the supervisor creates it in a
//! memfd and hands the fd over with the hello frame; the worker maps the same pages.

use std::ffi::CStr;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};
use shared::shm::{self, Header, PageSlot};

/// A mapped status page.
#[derive(Debug)]
pub struct StatusPage {
    ptr: NonNull<libc::c_void>,
    len: usize,
    slots: u32,
}

// SAFETY: the page holds only atomics, which may be shared between threads; the mapping
// lives until drop.
unsafe impl Send for StatusPage {}
// SAFETY: as above.
unsafe impl Sync for StatusPage {}

impl StatusPage {
    /// Creates a page with `slots` slots in a fresh memfd (supervisor side). The fd is
    /// close-on-exec; it reaches the worker only through the socket.
    pub fn create(slots: u32) -> io::Result<(Self, OwnedFd)> {
        if slots == 0 || slots > shm::MAX_SLOTS {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "status page slot count out of range"));
        }
        let name: &CStr = c"bulkhead-status";
        let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC)?;
        let len = shm::page_len(slots);
        nix::unistd::ftruncate(&fd, len as i64)?;
        let page = Self::map_fd(&fd, len, slots)?;
        page.header().slots.store(slots, Ordering::Relaxed);
        page.header().magic.store(shm::MAGIC, Ordering::Release);
        Ok((page, fd))
    }

    /// Maps a page received from the supervisor (worker side).
    pub fn open(fd: &OwnedFd) -> io::Result<Self> {
        let size = nix::sys::stat::fstat(fd)?.st_size as usize;
        if size < shm::page_len(1) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "status page too small"));
        }
        let mut page = Self::map_fd(fd, size, 1)?;
        let slots = page.header().slots.load(Ordering::Relaxed);
        if page.header().magic.load(Ordering::Acquire) != shm::MAGIC || slots == 0 || shm::page_len(slots) > size {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "status page not initialised"));
        }
        page.slots = slots;
        Ok(page)
    }

    fn map_fd(fd: &OwnedFd, len: usize, slots: u32) -> io::Result<Self> {
        let length = NonZeroUsize::new(len).expect("page length is never 0");
        // SAFETY: a fresh shared mapping of a file we hold; nothing else aliases it as
        // non-atomic memory.
        let ptr = unsafe {
            mmap(None, length, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED, fd.as_fd(), 0)?
        };
        Ok(Self { ptr, len, slots })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        // SAFETY: the mapping is at least one header long and page-aligned.
        unsafe { &*(self.ptr.as_ptr() as *const Header) }
    }

    /// All slots.
    pub fn slots(&self) -> &[PageSlot] {
        // SAFETY: `open`/`create` checked that `slots` slots fit behind the header; PageSlot is
        // repr(C) and made of atomics, valid for any bit pattern (zeroed by ftruncate).
        unsafe {
            let first = (self.ptr.as_ptr() as *const u8).add(std::mem::size_of::<Header>()) as *const PageSlot;
            std::slice::from_raw_parts(first, self.slots as usize)
        }
    }
}

impl Drop for StatusPage {
    fn drop(&mut self) {
        // SAFETY: we own the mapping; no reference into it outlives `self`.
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_see_the_same_page() {
        let (sup, fd) = StatusPage::create(3).unwrap();
        let wrk = StatusPage::open(&fd).unwrap();
        assert_eq!(wrk.slots().len(), 3);
        wrk.slots()[2].begin(9, 5);
        assert_eq!(sup.slots()[2].read(), shm::PageState::Running { seq: 9, started_ns: 5 });
        wrk.header().culprit.store(9, Ordering::Relaxed);
        assert_eq!(sup.header().culprit.load(Ordering::Relaxed), 9);
    }
}
