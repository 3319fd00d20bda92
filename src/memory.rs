//! Giving back memory that only start-up needed.
//!
//! A static binary is mapped whole, and the kernel's fault-around maps up
//! to 64 KiB of it around every page start-up touches, so by the time the
//! app runs most of lastcall's file is in its page tables: counted in its
//! Pss although the argument parser, the spawn code and the rest will
//! not run again. Once the app is running, lastcall drops those mappings
//! from its page tables with madvise(MADV_DONTNEED) — only for mappings of
//! its own file that it never wrote to (no anonymous, copy-on-write pages),
//! where dropping a page only means reading it back from the page cache on
//! next use. Free heap goes back with malloc_trim(3).

use std::fs;

/// Best effort; every failure just leaves the memory mapped.
pub fn release_startup_pages() {
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe { libc::malloc_trim(0) };
    let Ok(exe) = fs::read_link("/proc/self/exe") else { return };
    let Some(exe) = exe.to_str() else { return };
    let Ok(smaps) = fs::read_to_string("/proc/self/smaps") else { return };
    for (range, perms, anonymous_kb) in file_mappings(&smaps, exe) {
        // Only read-only mappings with no private copies: text and rodata.
        if anonymous_kb != 0 || perms.as_bytes().get(1) != Some(&b'-') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) else { continue };
        // SAFETY: the range is a private, read-only, never-written mapping of
        // our own executable (checked above), so dropping its page-table
        // entries loses no data: the next access maps the same file page.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

/// `(address range, permissions, Anonymous kB)` of every mapping of `path`
/// in /proc/self/smaps.
fn file_mappings<'a>(smaps: &'a str, path: &str) -> Vec<(&'a str, &'a str, u64)> {
    let mut out: Vec<(&str, &str, u64)> = Vec::new();
    let mut current: Option<usize> = None;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // A mapping header: range perms offset dev inode [path]
            let perms = words.next().unwrap_or("");
            let mapped = words.nth(3).unwrap_or("");
            current = (mapped == path).then(|| {
                out.push((first, perms, u64::MAX));
                out.len() - 1
            });
        } else if first == "Anonymous:" {
            if let Some(i) = current {
                out[i].2 = words.next().and_then(|kb| kb.parse().ok()).unwrap_or(u64::MAX);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_smaps() {
        let smaps = "\
55d0-55e0 r--p 00000000 fd:01 42 /lastcall
Size: 64 kB
Anonymous: 0 kB
55e0-55f0 r-xp 00010000 fd:01 42 /lastcall
Anonymous: 0 kB
55f0-5600 r--p 00020000 fd:01 42 /lastcall
Anonymous: 12 kB
5600-5610 rw-p 00000000 00:00 0 [heap]
Anonymous: 64 kB
";
        assert_eq!(
            file_mappings(smaps, "/lastcall"),
            vec![("55d0-55e0", "r--p", 0), ("55e0-55f0", "r-xp", 0), ("55f0-5600", "r--p", 12)]
        );
    }

    #[test]
    fn release_is_harmless() {
        release_startup_pages();
        // Code and constants still work after their pages were dropped.
        assert_eq!(format!("{}", 6 * 7), "42");
    }
}
