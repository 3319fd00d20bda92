//! Giving back memory that only start-up needed.
//!
//! A static binary is mapped whole, and the kernel's fault-around maps up
//! to 64 KiB of it around every page start-up touches, so by the time the
//! app runs most of lastcall's file is in its page tables: counted in its
//! Pss although the argument parser, the spawn code and the rest will
//! not run again. Once the app is running, lastcall drops from its page
//! tables the mappings of its own file that are never written: the code
//! (`r-xp`) and the read-only data before it (`r--p` at a lower file offset;
//! the RELRO part after the code was written by relocation and is left
//! alone). For such a private, never-written mapping madvise(MADV_DONTNEED)
//! loses nothing: the next access maps the same page from the page cache.
//! Free heap goes back with malloc_trim(3).

use std::fs;

/// Best effort; every failure just leaves the memory mapped.
pub fn release_startup_pages() {
    // No safe wrapper exists for malloc_trim(3) or madvise(2) (nix's madvise
    // is unsafe too: it can drop pages a program still relies on).
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe { libc::malloc_trim(0) };
    let Ok(exe) = fs::read_link("/proc/self/exe") else { return };
    let Some(exe) = exe.to_str() else { return };
    let Ok(maps) = fs::read_to_string("/proc/self/maps") else { return };
    for (start, end) in never_written(&maps, exe) {
        // SAFETY: a private mapping of our own executable that is never
        // written (see the module doc): dropping its page-table entries
        // loses no data.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

/// Address ranges of `path`'s code and of its read-only data before the code.
fn never_written(maps: &str, path: &str) -> Vec<(usize, usize)> {
    let mappings: Vec<(usize, usize, &str, u64)> = maps
        .lines()
        .filter(|line| line.ends_with(path))
        .filter_map(|line| {
            let mut w = line.split_whitespace();
            let (range, perms, offset) = (w.next()?, w.next()?, w.next()?);
            if w.nth(2)? != path {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some((
                usize::from_str_radix(start, 16).ok()?,
                usize::from_str_radix(end, 16).ok()?,
                perms,
                u64::from_str_radix(offset, 16).ok()?,
            ))
        })
        .collect();
    let Some(code_offset) = mappings.iter().filter(|m| m.2 == "r-xp").map(|m| m.3).min() else { return vec![] };
    mappings.iter().filter(|m| m.2 == "r-xp" || (m.2 == "r--p" && m.3 < code_offset)).map(|m| (m.0, m.1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_code_and_the_rodata_before_it() {
        let maps = "\
55d0000-55e0000 r--p 00000000 fd:01 42 /lastcall
55e0000-55f0000 r-xp 00010000 fd:01 42 /lastcall
55f0000-5600000 r--p 00020000 fd:01 42 /lastcall
5600000-5610000 rw-p 00030000 fd:01 42 /lastcall
5610000-5620000 rw-p 00000000 00:00 0 [heap]
7ff0000-7ff1000 r-xp 00000000 fd:01 43 /other
";
        assert_eq!(never_written(maps, "/lastcall"), vec![(0x55d0000, 0x55e0000), (0x55e0000, 0x55f0000)]);
        assert_eq!(never_written("", "/lastcall"), vec![]);
    }

    /// Resident KiB of this executable's code (`r-xp` mappings).
    fn code_rss_kb() -> u64 {
        let exe = fs::read_link("/proc/self/exe").unwrap();
        let exe = exe.to_str().unwrap();
        let smaps = fs::read_to_string("/proc/self/smaps").unwrap();
        let mut in_code = false;
        let mut kb = 0;
        for line in smaps.lines() {
            let mut words = line.split_whitespace();
            let (first, second) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            if first == "Rss:" && in_code {
                kb += second.parse::<u64>().unwrap();
            } else if first.contains('-') && second.len() == 4 {
                // A mapping's header: "start-end perms offset dev inode path".
                in_code = second == "r-xp" && line.ends_with(exe);
            }
        }
        kb
    }

    #[test]
    fn release_drops_code_pages_and_code_still_runs() {
        let before = code_rss_kb();
        release_startup_pages();
        let after = code_rss_kb();
        // The pages touched since (this test, the smaps read) come back;
        // the rest of the test binary's code does not.
        assert!(after < before, "code Rss {before} kB before, {after} kB after");
    }
}
