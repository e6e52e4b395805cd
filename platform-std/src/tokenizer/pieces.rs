//! Decoding a corpus as UTF-8 piece by piece, so a memory-mapped file larger
//! than memory trains and encodes without being copied.

/// Bytes of text decoded at a time when a corpus is streamed through the
/// char and word tokenizers (see [`for_each_lossy_piece`]).
pub const STREAM_PIECE_BYTES: usize = 1 << 20;

fn is_utf8_continuation(b: u8) -> bool {
    b & 0xc0 == 0x80
}

/// End of the piece of `bytes` starting at `start`: about `max_piece` bytes
/// later, moved back to a place where the lossy decoding can be cut.
///
/// Every unit of `String::from_utf8_lossy` (a character, or an invalid
/// sequence replaced by one U+FFFD) starts with a byte that is not a UTF-8
/// continuation byte (`10xxxxxx`), and is at most four bytes long. So a cut
/// before a non-continuation byte never splits a unit; and if the four bytes
/// up to the cut are all continuation bytes, no unit can span it either.
pub(super) fn piece_end(bytes: &[u8], start: usize, max_piece: usize) -> usize {
    let end = start.saturating_add(max_piece.max(4));
    if end >= bytes.len() {
        return bytes.len();
    }
    (end - 3..=end)
        .rev()
        .find(|&c| !is_utf8_continuation(bytes[c]))
        .unwrap_or(end)
}

/// Calls `f` with consecutive pieces of `String::from_utf8_lossy(bytes)`,
/// each decoded from at most about `max_piece` bytes, stopping at the first
/// error. The pieces concatenate to exactly the lossy text, but only one is
/// held at a time: valid UTF-8 is borrowed from `bytes`, and only a piece
/// with invalid sequences is copied. This is how the char and word
/// tokenizers read a memory-mapped corpus without copying it.
pub fn for_each_lossy_piece<E, F>(bytes: &[u8], max_piece: usize, mut f: F) -> Result<(), E>
where
    F: FnMut(&str) -> Result<(), E>,
{
    let mut start = 0;
    while start < bytes.len() {
        let end = piece_end(bytes, start, max_piece);
        f(&String::from_utf8_lossy(&bytes[start..end]))?;
        start = end;
    }
    Ok(())
}
