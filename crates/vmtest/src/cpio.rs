//! The `newc` cpio format the kernel unpacks an initramfs from.
//!
//! Each member is a 110-byte ASCII header (magic `070701`, then thirteen 8-digit
//! hex fields), the NUL-terminated name, padding to a multiple of 4, the data,
//! and padding again. A member named `TRAILER!!!` ends the archive. The kernel
//! accepts several archives one after the other, and later members replace
//! earlier ones of the same name.

/// An archive being built in memory.
#[derive(Default)]
pub struct Archive {
    bytes: Vec<u8>,
    next_ino: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl Archive {
    /// An empty archive.
    pub fn new() -> Archive {
        Archive::default()
    }

    /// Adds a directory (parents must come first).
    pub fn dir(&mut self, name: &str) {
        self.member(name, S_IFDIR | 0o755, &[]);
    }

    /// Adds a regular file with permission bits `perm`.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.member(name, S_IFREG | perm, data);
    }

    /// Adds a symbolic link to `target`.
    pub fn symlink(&mut self, name: &str, target: &str) {
        self.member(name, S_IFLNK | 0o777, target.as_bytes());
    }

    /// Adds a character device node.
    pub fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.member_dev(name, S_IFCHR | 0o600, &[], (major, minor));
    }

    /// Ends the archive and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.member("TRAILER!!!", 0, &[]);
        self.bytes
    }

    fn member(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.member_dev(name, mode, data, (0, 0));
    }

    fn member_dev(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        self.next_ino += 1;
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        let fields = [
            self.next_ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            data.len() as u32,
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check (unused by newc)
        ];
        self.bytes.extend_from_slice(b"070701");
        for f in fields {
            self.bytes.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        let padded = self.bytes.len().next_multiple_of(4);
        self.bytes.resize(padded, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_aligned_and_headers_well_formed() {
        let mut a = Archive::new();
        a.dir("bin");
        a.file("bin/x", 0o755, b"hello");
        a.symlink("sh", "bin/x");
        let bytes = a.finish();
        assert_eq!(bytes.len().next_multiple_of(4), bytes.len());
        // First member: header, "bin\0" padded so the next header is aligned.
        assert_eq!(&bytes[..6], b"070701");
        let mode = u32::from_str_radix(std::str::from_utf8(&bytes[14..22]).unwrap(), 16);
        assert_eq!(mode, Ok(S_IFDIR | 0o755));
        assert_eq!(&bytes[110..114], b"bin\0");
        assert_eq!(&bytes[116..122], b"070701");
        assert!(bytes
            .windows(b"TRAILER!!!\0".len())
            .any(|w| w == b"TRAILER!!!\0"));
    }
}
