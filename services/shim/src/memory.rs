//! Keeping a long-lived shim small.
//!
//! Creating a container touches much code (spec parsing, cgroups, mounts) that the shim never
//! runs again; its pages would stay counted in the shim's resident set for the container's
//! whole life. Once the container is created, the shim drops the clean, read-only file pages
//! it has mapped: they are shared page cache, identical to the file, and fault back in if
//! ever needed. Pages that hold private changes (relocations, data) are never touched.

use std::fs;

/// Drops resident pages of clean, read-only file mappings (code and constants) of this
/// process. Failures are ignored: this only trims memory.
pub fn release_setup_pages() {
    let Ok(smaps) = fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        if line.split_whitespace().next().is_some_and(is_header_field) {
            // A new mapping: a candidate only if it is read-only, private and file-backed.
            current = mapping_to_release(line);
            continue;
        }
        // Only a mapping with no private (anonymous) page is identical to its file.
        if let (Some((start, end)), Some(rest)) = (current, line.strip_prefix("Anonymous:")) {
            current = None;
            if rest.trim().trim_end_matches("kB").trim() == "0" {
                // SAFETY: the range is a whole read-only, file-backed private mapping of this
                // process without anonymous pages; MADV_DONTNEED only drops page-table entries,
                // and the pages fault back in unchanged from the file on the next access.
                unsafe {
                    libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
                }
            }
        }
    }
}

fn is_header_field(f: &str) -> bool {
    f.contains('-') && f.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// `start-end perms offset dev inode path` of a read-only, private file mapping.
fn mapping_to_release(line: &str) -> Option<(usize, usize)> {
    let mut f = line.split_whitespace();
    let range = f.next()?;
    if !is_header_field(range) {
        return None;
    }
    let perms = f.next()?;
    let (_offset, _dev, inode) = (f.next()?, f.next()?, f.next()?);
    let path = f.next()?;
    let private_read_only = perms.len() == 4 && !perms.contains('w') && perms.ends_with('p');
    if !private_read_only || inode == "0" || !path.starts_with('/') {
        return None;
    }
    let (a, b) = range.split_once('-')?;
    Some((
        usize::from_str_radix(a, 16).ok()?,
        usize::from_str_radix(b, 16).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_read_only_file_mappings() {
        assert_eq!(
            mapping_to_release("7f00-7f10 r-xp 00000000 fe:01 123 /usr/lib/libc.so.6"),
            Some((0x7f00, 0x7f10))
        );
        assert_eq!(
            mapping_to_release("7f00-7f10 rw-p 00000000 fe:01 123 /usr/lib/libc.so.6"),
            None
        );
        assert_eq!(
            mapping_to_release("7f00-7f10 r--s 00000000 fe:01 123 /dev/shm/x"),
            None
        );
        assert_eq!(
            mapping_to_release("7f00-7f10 r--p 00000000 00:00 0 [vvar]"),
            None
        );
        assert_eq!(mapping_to_release("7f00-7f10 rw-p 00000000 00:00 0"), None);
        assert_eq!(mapping_to_release("Anonymous:             0 kB"), None);
    }

    #[test]
    fn releasing_keeps_the_process_working() {
        release_setup_pages();
        // code and constants fault back in
        let v: Vec<String> = (0..100).map(|i| format!("{i}")).collect();
        assert_eq!(v.join(",").len(), 289);
    }
}
