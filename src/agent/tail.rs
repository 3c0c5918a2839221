//! Reads what is new in a job's local log file, in whole lines, so the
//! runner can send it to the server as it is written.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The most sent in one message.
pub const MAX_CHUNK: usize = 64 * 1024;

/// The file's size now (0 if it does not exist): where a job that this
/// runner did not know yet starts sending from, so that output of an
/// earlier run is not sent twice.
pub fn current_length(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The whole lines after `offset`, at most [`MAX_CHUNK`] bytes (a longer
/// line is sent in pieces), and the offset after them. Nothing while the
/// file does not exist or has no new complete line.
pub fn read_new_lines(path: &Path, offset: u64) -> std::io::Result<Option<(Vec<u8>, u64)>> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let length = file.metadata()?.len();
    if length <= offset {
        return Ok(None);
    }
    file.seek(SeekFrom::Start(offset))?;
    let mut buffer = vec![0; (length - offset).min(MAX_CHUNK as u64) as usize];
    file.read_exact(&mut buffer)?;
    let end = match buffer.iter().rposition(|b| *b == b'\n') {
        Some(last_newline) => last_newline + 1,
        // A line longer than a chunk goes in pieces; a short partial line
        // waits for its end.
        None if buffer.len() == MAX_CHUNK => MAX_CHUNK,
        None => return Ok(None),
    };
    buffer.truncate(end);
    Ok(Some((buffer, offset + end as u64)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn only_whole_lines_are_read_and_offsets_advance() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.log");
        assert_eq!(read_new_lines(&path, 0).unwrap(), None, "no file yet");
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(b"one\ntw").unwrap();
        let (data, offset) = read_new_lines(&path, 0).unwrap().unwrap();
        assert_eq!((data.as_slice(), offset), (&b"one\n"[..], 4));
        assert_eq!(read_new_lines(&path, offset).unwrap(), None, "a partial line waits");
        file.write_all(b"o\nthree\n").unwrap();
        let (data, offset) = read_new_lines(&path, offset).unwrap().unwrap();
        assert_eq!((data.as_slice(), offset), (&b"two\nthree\n"[..], 14));
        assert_eq!(current_length(&path), 14);
    }

    #[test]
    fn a_huge_line_goes_in_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.log");
        std::fs::write(&path, vec![b'x'; MAX_CHUNK + 10]).unwrap();
        let (data, offset) = read_new_lines(&path, 0).unwrap().unwrap();
        assert_eq!((data.len(), offset), (MAX_CHUNK, MAX_CHUNK as u64));
    }
}
