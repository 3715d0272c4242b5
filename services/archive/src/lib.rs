//! Reading a tar archive from a stranger with bounded memory and disk.
//!
//! The `tar` crate reads a GNU long name, long link or PAX header wholly into memory, however
//! large its header says it is, and turns a sparse entry into a stream of its expanded size:
//! a gzip of a few MB could make berthd hold 1 GiB or write 1 TiB. [`Reader`] walks the
//! archive itself, header by header, and uses the crate only to decode header fields:
//!
//! - an extension header (GNU `L`/`K`, PAX `x`/`g`) larger than [`MAX_EXTENSION`] (1 MiB,
//!   Go's archive/tar cap) is refused from its size field, before any of it is read;
//! - an entry name or link target longer than [`MAX_PATH`] is refused (Linux could not open it);
//! - an old-GNU sparse entry (`S`, what `tar --sparse` writes) keeps its map (capped like an
//!   extension header) and [`Reader::write_file`] writes only its data segments, so the holes
//!   stay holes; the PAX sparse formats are refused;
//! - [`Limits`] bound the entries and the bytes of data of one archive; an entry whose size
//!   would cross them is refused before its data is read.
//!
//! ```
//! # fn demo(layer: &[u8]) -> Result<(), berth_archive::ArchiveError> {
//! use berth_archive::Reader;
//! let mut r = Reader::new(layer, berth_core::config::Limits::default());
//! while let Some(entry) = r.next_entry()? {
//!     println!("{}", String::from_utf8_lossy(&entry.path));
//! }
//! # Ok(()) }
//! ```

use berth_core::config::Limits;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// The largest GNU long name/link, PAX header or sparse map read (as Go's archive/tar).
pub const MAX_EXTENSION: u64 = 1 << 20;
/// The longest entry name or link target taken (PATH_MAX).
pub const MAX_PATH: usize = 4096;

const BLOCK: u64 = 512;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("it has a {what} header of {size} bytes, more than the {max} bytes accepted (as Go's archive/tar accepts); no tool writes such headers for real files")]
    ExtensionTooLong {
        what: &'static str,
        size: u64,
        max: u64,
    },
    #[error("entry {start:?}… has a {what} of {len} bytes, longer than the {max} bytes (PATH_MAX) a path may have")]
    PathTooLong {
        what: &'static str,
        start: String,
        len: usize,
        max: usize,
    },
    #[error("it holds more than {max} entries ([limits] max_entries in berthd's config)")]
    TooManyEntries { max: u64 },
    #[error("entry {entry:?} would take it past {max} bytes of file data ([limits] max_unpacked_size in berthd's config)")]
    TooLarge { entry: String, max: u64 },
    #[error("sparse entry {entry:?}: {reason}")]
    BadSparse { entry: String, reason: String },
    #[error("entry {entry:?} is a sparse file in a PAX sparse format (GNU.sparse.* records), which berth does not unpack; repack it without --sparse or with --format=gnu")]
    PaxSparse { entry: String },
    #[error("the tar stream is truncated or corrupt: {0}")]
    Corrupt(#[source] io::Error),
    #[error("writing entry {entry:?}: {source}")]
    Write {
        entry: String,
        #[source]
        source: io::Error,
    },
}

impl ArchiveError {
    /// Whether a configured limit (rather than a malformed archive) stopped it.
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            ArchiveError::TooManyEntries { .. } | ArchiveError::TooLarge { .. }
        )
    }
}

fn corrupt(msg: impl Into<String>) -> ArchiveError {
    ArchiveError::Corrupt(io::Error::new(io::ErrorKind::InvalidData, msg.into()))
}

/// One entry: its header and what the extension headers before it said.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The entry's own header; uid and gid already replaced by PAX `uid`/`gid` records.
    pub header: tar::Header,
    /// The name: GNU long name, else PAX `path`, else the header's (ustar prefix joined).
    pub path: Vec<u8>,
    /// The link target: GNU long link, else PAX `linkpath`, else the header's.
    pub link: Option<Vec<u8>>,
    /// The records of the PAX header that described this entry (empty without one).
    pub pax: Vec<(Vec<u8>, Vec<u8>)>,
    /// Bytes of data that follow the header in the archive.
    pub size: u64,
    /// For a sparse entry: where its data segments go, and its real length.
    pub sparse: Option<Sparse>,
}

impl Entry {
    pub fn kind(&self) -> tar::EntryType {
        self.header.entry_type()
    }

    /// The name, for messages.
    pub fn name(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

/// The layout of a sparse file: `(offset, length)` of each data segment, in order, and the
/// file's length; everything else is a hole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sparse {
    pub segments: Vec<(u64, u64)>,
    pub real_size: u64,
}

/// Reads entries one at a time; see the module documentation.
#[derive(Debug)]
pub struct Reader<R> {
    inner: R,
    limits: Limits,
    /// Bytes of the current entry's data not read yet, and its padding after them.
    left: u64,
    padding: u64,
    entries: u64,
    data: u64,
    ended: bool,
}

impl<R: Read> Reader<R> {
    pub fn new(inner: R, limits: Limits) -> Reader<R> {
        Reader {
            inner,
            limits,
            left: 0,
            padding: 0,
            entries: 0,
            data: 0,
            ended: false,
        }
    }

    /// The stream, positioned after the end-of-archive block once [`next_entry`] returned
    /// `None`.
    ///
    /// [`next_entry`]: Reader::next_entry
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The next entry, skipping what is left of the current one; `None` at the end-of-archive
    /// block or at the end of the stream (on a block boundary).
    pub fn next_entry(&mut self) -> Result<Option<Entry>, ArchiveError> {
        if self.ended {
            return Ok(None);
        }
        let Some((mut header, mut size, ext)) = self.next_header()? else {
            self.ended = true;
            return Ok(None);
        };
        let records = pax_records(ext.pax.as_deref())?;
        if let Some(s) = pax_number(&records, b"size")? {
            size = s;
        }
        if let Some(uid) = pax_number(&records, b"uid")? {
            header.set_uid(uid);
        }
        if let Some(gid) = pax_number(&records, b"gid")? {
            header.set_gid(gid);
        }
        let path = match (&ext.long_name, pax_record(&records, b"path")) {
            (Some(n), _) => until_nul(n).to_vec(),
            (None, Some(p)) => p.to_vec(),
            (None, None) => header.path_bytes().into_owned(),
        };
        let link = match (&ext.long_link, pax_record(&records, b"linkpath")) {
            (Some(n), _) => Some(until_nul(n).to_vec()),
            (None, Some(p)) => Some(p.to_vec()),
            (None, None) => header.link_name_bytes().map(|l| l.into_owned()),
        };
        check_path("name", &path)?;
        if let Some(l) = &link {
            check_path("link target", l)?;
        }
        let name = String::from_utf8_lossy(&path).into_owned();
        if records.iter().any(|(k, _)| k.starts_with(b"GNU.sparse.")) {
            return Err(ArchiveError::PaxSparse { entry: name });
        }
        self.count_entry()?;
        let sparse = if header.entry_type().is_gnu_sparse() {
            Some(self.sparse_map(&header, size, &name)?)
        } else {
            None
        };
        self.count_data(size, &name)?;
        self.left = size;
        self.padding = padding(size);
        Ok(Some(Entry {
            header,
            path,
            link,
            pax: records,
            size,
            sparse,
        }))
    }

    /// The next entry's header and the size field it declares, with the extension headers
    /// read before it; `None` at the end-of-archive block or at the end of the stream.
    fn next_header(&mut self) -> Result<Option<(tar::Header, u64, Extensions)>, ArchiveError> {
        let mut ext = Extensions::default();
        loop {
            self.skip_rest()?;
            let mut header = tar::Header::new_old();
            if !self.read_block(header.as_mut_bytes())? {
                if ext.long_name.is_some() || ext.long_link.is_some() || ext.pax.is_some() {
                    return Err(corrupt("the stream ends after an extension header"));
                }
                return Ok(None);
            }
            if header.as_bytes().iter().all(|&b| b == 0) {
                return Ok(None);
            }
            check_sum(&header)?;
            let size = header.entry_size().map_err(ArchiveError::Corrupt)?;
            let kind = header.entry_type().as_byte();
            let what = match kind {
                b'L' => "GNU long name",
                b'K' => "GNU long link",
                b'x' => "PAX",
                b'g' => "PAX global",
                _ => return Ok(Some((header, size, ext))),
            };
            if size > MAX_EXTENSION {
                return Err(ArchiveError::ExtensionTooLong {
                    what,
                    size,
                    max: MAX_EXTENSION,
                });
            }
            let value = self.read_extension(size)?;
            let slot = match kind {
                b'L' => &mut ext.long_name,
                b'K' => &mut ext.long_link,
                b'x' => &mut ext.pax,
                // Global records set defaults nobody who builds layers relies on; like the
                // tar crate, berth does not apply them.
                _ => continue,
            };
            if slot.is_some() {
                return Err(corrupt(format!("two {what} headers for one entry")));
            }
            *slot = Some(value);
        }
    }

    /// Counts one more entry against [`Limits::max_entries`].
    fn count_entry(&mut self) -> Result<(), ArchiveError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                max: self.limits.max_entries,
            });
        }
        Ok(())
    }

    /// Counts `size` bytes of `entry`'s data against [`Limits::max_unpacked_size`].
    fn count_data(&mut self, size: u64, entry: &str) -> Result<(), ArchiveError> {
        self.data = self
            .data
            .checked_add(size)
            .filter(|&d| d <= self.limits.max_unpacked_size)
            .ok_or_else(|| ArchiveError::TooLarge {
                entry: entry.to_string(),
                max: self.limits.max_unpacked_size,
            })?;
        Ok(())
    }

    /// The current entry's data as stored (a sparse entry's segments back to back).
    pub fn data(&mut self) -> Data<'_, R> {
        Data { reader: self }
    }

    /// Writes the current entry's data into `file` (new and empty); a sparse entry's holes
    /// are left unwritten.
    pub fn write_file(&mut self, entry: &Entry, file: &mut File) -> Result<(), ArchiveError> {
        let write = |source| ArchiveError::Write {
            entry: entry.name(),
            source,
        };
        let mut buf = vec![0u8; 128 * 1024];
        let Some(sparse) = &entry.sparse else {
            return self.copy_to(self.left, file, &mut buf, &entry.name());
        };
        for &(offset, len) in &sparse.segments {
            file.seek(SeekFrom::Start(offset)).map_err(write)?;
            self.copy_to(len, file, &mut buf, &entry.name())?;
        }
        file.set_len(sparse.real_size).map_err(write)
    }

    fn copy_to(
        &mut self,
        mut n: u64,
        file: &mut File,
        buf: &mut [u8],
        entry: &str,
    ) -> Result<(), ArchiveError> {
        while n > 0 {
            let want = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            let got = self
                .data()
                .read(&mut buf[..want])
                .map_err(ArchiveError::Corrupt)?;
            if got == 0 {
                return Err(corrupt(format!("the data of {entry:?} is cut short")));
            }
            file.write_all(&buf[..got])
                .map_err(|source| ArchiveError::Write {
                    entry: entry.to_string(),
                    source,
                })?;
            n -= got as u64;
        }
        Ok(())
    }

    /// Reads the map of an old-GNU sparse entry: four slots in its header, then extension
    /// blocks of 21 while the previous one says more follow.
    fn sparse_map(
        &mut self,
        header: &tar::Header,
        size: u64,
        name: &str,
    ) -> Result<Sparse, ArchiveError> {
        let bad = |reason: &str| ArchiveError::BadSparse {
            entry: name.to_string(),
            reason: reason.to_string(),
        };
        let gnu = header
            .as_gnu()
            .ok_or_else(|| bad("the header is not in GNU format"))?;
        let real_size = gnu.real_size().map_err(ArchiveError::Corrupt)?;
        let mut segments = Vec::new();
        let mut add = |s: &tar::GnuSparseHeader| -> Result<(), ArchiveError> {
            if s.is_empty() {
                return Ok(());
            }
            let off = s.offset().map_err(ArchiveError::Corrupt)?;
            let len = s.length().map_err(ArchiveError::Corrupt)?;
            segments.push((off, len));
            Ok(())
        };
        for s in &gnu.sparse {
            add(s)?;
        }
        let mut more = gnu.is_extended();
        let mut read = 0;
        while more {
            read += BLOCK;
            if read > MAX_EXTENSION {
                return Err(ArchiveError::ExtensionTooLong {
                    what: "GNU sparse map",
                    size: read,
                    max: MAX_EXTENSION,
                });
            }
            let mut ext = tar::GnuExtSparseHeader::new();
            if !self.read_block(ext.as_mut_bytes())? {
                return Err(corrupt(format!("the sparse map of {name:?} is cut short")));
            }
            for s in ext.sparse() {
                add(s)?;
            }
            more = ext.is_extended();
        }
        let mut end = 0u64;
        let mut stored = 0u64;
        for &(off, len) in &segments {
            if off < end {
                return Err(bad("its segments overlap or are out of order"));
            }
            end = off
                .checked_add(len)
                .filter(|&e| e <= real_size)
                .ok_or_else(|| bad("a segment lies past the file's end"))?;
            stored += len;
        }
        if stored != size {
            return Err(bad("its segments do not add up to the data stored"));
        }
        Ok(Sparse {
            segments,
            real_size,
        })
    }

    /// Reads one 512-byte block; `false` at the end of the stream before any byte of it.
    fn read_block(&mut self, block: &mut [u8]) -> Result<bool, ArchiveError> {
        let mut got = 0;
        while got < block.len() {
            match self.inner.read(&mut block[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => return Err(corrupt("the stream ends inside a header")),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ArchiveError::Corrupt(e)),
            }
        }
        Ok(true)
    }

    /// The data of an extension header (`size` already checked against the cap).
    fn read_extension(&mut self, size: u64) -> Result<Vec<u8>, ArchiveError> {
        let mut v = Vec::with_capacity(size as usize);
        (&mut self.inner)
            .take(size)
            .read_to_end(&mut v)
            .map_err(ArchiveError::Corrupt)?;
        if v.len() as u64 != size {
            return Err(corrupt("the stream ends inside an extension header"));
        }
        self.padding = padding(size);
        Ok(v)
    }

    /// Skips the unread data of the current entry and its padding.
    fn skip_rest(&mut self) -> Result<(), ArchiveError> {
        let n = self.left + self.padding;
        self.left = 0;
        self.padding = 0;
        let skipped = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())
            .map_err(ArchiveError::Corrupt)?;
        if skipped != n {
            return Err(corrupt("the stream ends inside an entry's data"));
        }
        Ok(())
    }
}

/// The data of the current entry; reads end where it does.
#[derive(Debug)]
pub struct Data<'a, R> {
    reader: &'a mut Reader<R>,
}

impl<R: Read> Read for Data<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = &mut *self.reader;
        if r.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(r.left).unwrap_or(usize::MAX));
        let n = r.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the stream ends inside an entry's data",
            ));
        }
        r.left -= n as u64;
        Ok(n)
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

fn until_nul(b: &[u8]) -> &[u8] {
    b.split(|&c| c == 0).next().unwrap_or(b)
}

/// What the extension headers before an entry held: a GNU long name or long link, PAX
/// records.
#[derive(Debug, Default)]
struct Extensions {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
}

/// The `(key, value)` records of a PAX header, in order.
type PaxRecords = Vec<(Vec<u8>, Vec<u8>)>;

/// The records of a PAX header, in order (none without one).
fn pax_records(pax: Option<&[u8]>) -> Result<PaxRecords, ArchiveError> {
    let mut records = Vec::new();
    if let Some(p) = pax {
        for r in tar::PaxExtensions::new(p) {
            let r = r.map_err(ArchiveError::Corrupt)?;
            records.push((r.key_bytes().to_vec(), r.value_bytes().to_vec()));
        }
    }
    Ok(records)
}

/// The value of the last record named `key`.
fn pax_record<'a>(records: &'a [(Vec<u8>, Vec<u8>)], key: &[u8]) -> Option<&'a [u8]> {
    records
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_slice())
}

/// The value of the last record named `key`, a decimal number.
fn pax_number(records: &[(Vec<u8>, Vec<u8>)], key: &[u8]) -> Result<Option<u64>, ArchiveError> {
    match pax_record(records, key) {
        None => Ok(None),
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| {
                corrupt(format!(
                    "PAX record {} is not a number",
                    String::from_utf8_lossy(key)
                ))
            }),
    }
}

fn check_sum(header: &tar::Header) -> Result<(), ArchiveError> {
    let b = header.as_bytes();
    let sum = b[..148]
        .iter()
        .chain(&b[156..])
        .fold(0u32, |a, &c| a + u32::from(c))
        + 8 * 32;
    if header.cksum().map_err(ArchiveError::Corrupt)? != sum {
        return Err(corrupt("a header's checksum does not match"));
    }
    Ok(())
}

fn check_path(what: &'static str, p: &[u8]) -> Result<(), ArchiveError> {
    if p.len() > MAX_PATH {
        return Err(ArchiveError::PathTooLong {
            what,
            start: String::from_utf8_lossy(&p[..64]).into_owned(),
            len: p.len(),
            max: MAX_PATH,
        });
    }
    Ok(())
}

#[cfg(any(test, feature = "hostile"))]
pub mod hostile;

#[cfg(test)]
mod tests {
    use super::hostile::Stream;
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn names(tar: &[u8], limits: Limits) -> Result<Vec<String>, ArchiveError> {
        let mut r = Reader::new(tar, limits);
        let mut out = Vec::new();
        while let Some(e) = r.next_entry()? {
            let mut data = Vec::new();
            r.data()
                .read_to_end(&mut data)
                .map_err(ArchiveError::Corrupt)?;
            assert_eq!(data.len() as u64, e.size);
            out.push(e.name());
        }
        Ok(out)
    }

    #[test]
    fn reads_what_the_tar_crate_writes() {
        let long = "d/".repeat(100) + "file";
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "link", "t/".repeat(80)).unwrap();
        b.append_pax_extensions([("path", &b"pax/name"[..]), ("uid", b"4000000")])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(1);
        b.append_data(&mut h, "short", &b"x"[..]).unwrap();
        let tar = b.into_inner().unwrap();

        let mut r = Reader::new(&tar[..], limits());
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.name(), long);
        let mut data = String::new();
        r.data().read_to_string(&mut data).unwrap();
        assert_eq!(data, "abc");
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.link.as_deref(), Some("t/".repeat(80).as_bytes()));
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.name(), "pax/name");
        assert_eq!(e.header.uid().unwrap(), 4_000_000);
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn a_gib_long_name_is_refused_from_its_header() {
        for (kind, what) in [
            (tar::EntryType::GNULongName, "GNU long name"),
            (tar::EntryType::GNULongLink, "GNU long link"),
            (tar::EntryType::XHeader, "PAX"),
            (tar::EntryType::XGlobalHeader, "PAX global"),
        ] {
            let mut s = Stream::default().extension(kind, 1 << 30, b'a').end();
            let mut r = Reader::new(&mut s, limits());
            let e = r.next_entry().unwrap_err();
            assert!(
                matches!(e, ArchiveError::ExtensionTooLong { what: w, size, .. } if w == what && size == 1 << 30),
                "{e}"
            );
            assert!(e.to_string().contains("1073741824 bytes"), "{e}");
            // Refused from the header alone: none of the 1 GiB was read.
            assert_eq!(s.read, 512);
        }
        // 1 MiB itself is fine (Go's cap), as long as the name fits a path.
        let mut s = Stream::default()
            .extension(tar::EntryType::XGlobalHeader, MAX_EXTENSION, b'a')
            .end();
        assert_eq!(names_of(&mut s).unwrap(), ["after"]);
    }

    fn names_of(s: &mut Stream) -> Result<Vec<String>, ArchiveError> {
        let mut r = Reader::new(s, limits());
        let mut out = Vec::new();
        while let Some(e) = r.next_entry()? {
            out.push(e.name());
        }
        Ok(out)
    }

    #[test]
    fn names_longer_than_path_max_are_refused() {
        let mut s = Stream::default()
            .extension(tar::EntryType::GNULongName, 5000, b'a')
            .end();
        let e = names_of(&mut s).unwrap_err();
        assert!(
            matches!(e, ArchiveError::PathTooLong { len: 5000, .. }),
            "{e}"
        );
    }

    #[test]
    fn entries_and_data_are_limited() {
        let tar = tar_of(&[("a", b"1234"), ("b", b"5678"), ("c", b"9")]);
        assert_eq!(names(&tar, limits()).unwrap(), ["a", "b", "c"]);
        let few = Limits {
            max_entries: 2,
            ..limits()
        };
        let e = names(&tar, few).unwrap_err();
        assert!(matches!(e, ArchiveError::TooManyEntries { max: 2 }), "{e}");
        assert!(e.is_limit() && e.to_string().contains("max_entries"), "{e}");
        let small = Limits {
            max_unpacked_size: 8,
            ..limits()
        };
        let e = names(&tar, small).unwrap_err();
        assert!(
            matches!(&e, ArchiveError::TooLarge { entry, max: 8 } if entry == "c"),
            "{e}"
        );
        assert!(e.is_limit() && e.to_string().contains("max_unpacked_size"));
    }

    #[test]
    fn a_huge_file_is_refused_before_its_data_is_read() {
        let mut s = Stream::default()
            .header(tar::EntryType::Regular, "big", 1 << 40)
            .run(0, 1 << 40);
        let e = names_of(&mut s).unwrap_err();
        assert!(matches!(e, ArchiveError::TooLarge { .. }), "{e}");
        assert_eq!(s.read, 512);
    }

    #[test]
    fn sparse_maps_are_read_and_checked() {
        let tib = 1u64 << 40;
        let mut tar = hostile::sparse("s", tib, &[(0, b"head"), (tib - 4, b"tail")]);
        tar.extend_from_slice(&[0; 1024]);
        let mut r = Reader::new(&tar[..], limits());
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(
            e.sparse,
            Some(Sparse {
                segments: vec![(0, 4), (tib - 4, 4)],
                real_size: tib
            })
        );
        assert_eq!(e.size, 8, "only the data counts");
        assert!(r.next_entry().unwrap().is_none());

        for (segments, why) in [
            (&[(10, &b"a"[..]), (5, b"b")][..], "overlap"),
            (&[(tib, &b"a"[..])][..], "past the file's end"),
        ] {
            let tar = hostile::sparse("s", tib, segments);
            let e = Reader::new(&tar[..], limits()).next_entry().unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
        }
    }

    #[test]
    fn an_endless_sparse_map_is_refused() {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNUSparse);
        h.set_path("s").unwrap();
        h.set_size(0);
        let gnu = h.as_gnu_mut().unwrap();
        gnu.set_real_size(1);
        gnu.set_is_extended(true);
        h.set_cksum();
        let mut ext = tar::GnuExtSparseHeader::new();
        ext.set_is_extended(true);
        let mut s = Stream::default().bytes(h.as_bytes());
        for _ in 0..4096 {
            s = s.bytes(ext.as_bytes());
        }
        let e = names_of(&mut s).unwrap_err();
        assert!(
            matches!(
                e,
                ArchiveError::ExtensionTooLong {
                    what: "GNU sparse map",
                    ..
                }
            ),
            "{e}"
        );
        assert!(s.read <= MAX_EXTENSION + 1024);
    }

    #[test]
    fn pax_sparse_formats_are_refused() {
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("GNU.sparse.major", &b"1"[..]), ("GNU.sparse.minor", b"0")])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        b.append_data(&mut h, "GNUSparseFile.0/f", io::empty())
            .unwrap();
        let tar = b.into_inner().unwrap();
        let e = names(&tar, limits()).unwrap_err();
        assert!(matches!(e, ArchiveError::PaxSparse { .. }), "{e}");
    }

    #[test]
    fn extension_headers_must_describe_one_entry() {
        // Two long names for one entry.
        let mut s = Stream::default()
            .extension(tar::EntryType::GNULongName, 10, b'a')
            .extension(tar::EntryType::GNULongName, 10, b'b')
            .end();
        let e = names_of(&mut s).unwrap_err();
        assert!(e.to_string().contains("two GNU long name headers"), "{e}");
        // A long name and then nothing.
        let mut s = Stream::default().extension(tar::EntryType::GNULongName, 10, b'a');
        let e = names_of(&mut s).unwrap_err();
        assert!(
            e.to_string().contains("ends after an extension header"),
            "{e}"
        );
        // A PAX size that is not a number.
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("size", &b"12x"[..])]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        b.append_data(&mut h, "f", io::empty()).unwrap();
        let e = names(&b.into_inner().unwrap(), limits()).unwrap_err();
        assert!(
            e.to_string().contains("PAX record size is not a number"),
            "{e}"
        );
    }

    #[test]
    fn cut_streams_are_corrupt() {
        let tar = tar_of(&[("a", &[7u8; 1000])]);
        for cut in [100, 600, 1024] {
            let e = names(&tar[..cut], limits()).unwrap_err();
            assert!(matches!(e, ArchiveError::Corrupt(_)), "{cut}: {e}");
        }
        let mut bad = tar.clone();
        bad[0] ^= 1;
        assert!(names(&bad, limits()).is_err());
    }
}
