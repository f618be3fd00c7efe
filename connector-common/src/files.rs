//! Files a configuration names (the configuration itself, `sites_file`,
//! PEM files): opened only when they are regular files of a bounded size.
//! A device read would never end (`/dev/zero` fills the memory) and opening
//! a FIFO waits for a writer, so the path is looked at before it is opened.

use std::io::{Error, ErrorKind, Read};
use std::path::Path;

/// Opens `path` when it is a regular file of at most `max` bytes; else an
/// error saying which it is not (`too_large` is added to the size's).
pub fn open_regular(path: &Path, max: u64, too_large: &str) -> std::io::Result<std::fs::File> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "not a regular file (a device, a FIFO or a directory is not read); give the path of a file",
        ));
    }
    if meta.len() > max {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("larger than {max} bytes{too_large}"),
        ));
    }
    std::fs::File::open(path)
}

/// The bytes of `path`, a regular file of at most `max` bytes
/// ([`open_regular`]); no more than `max` are read if it grows meanwhile.
pub fn read_regular(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open_regular(path, max, "")?
        .take(max)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_a_fifo_or_a_file_too_large_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        for p in [&zero, &fifo] {
            let e = read_regular(p, 1 << 20).unwrap_err();
            assert!(e.to_string().contains("not a regular file"), "{p:?}: {e}");
        }
        let file = dir.path().join("f");
        std::fs::write(&file, "12345").unwrap();
        assert_eq!(read_regular(&file, 5).unwrap(), b"12345");
        let e = open_regular(&file, 4, "; split it").unwrap_err();
        assert_eq!(e.to_string(), "larger than 4 bytes; split it");
    }
}
